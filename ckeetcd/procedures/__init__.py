"""Procedures an operator starts: restore from a snapshot."""
