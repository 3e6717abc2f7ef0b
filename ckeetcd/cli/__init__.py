"""Thin commands over the library, one module per subcommand."""
