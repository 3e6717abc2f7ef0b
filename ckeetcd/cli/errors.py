"""Errors every command shares (kept apart from main so `python -m` sees one class)."""

USAGE_ERROR = 2


class UsageError(Exception):
    """Bad arguments: exit status 2, nothing changed."""
