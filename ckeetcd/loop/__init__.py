"""The daemon's loop: observe, plan, run, and the tasks beside it."""
