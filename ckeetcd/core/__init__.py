"""The pure layer: config, model, the plan, and the rules it uses. No I/O."""
