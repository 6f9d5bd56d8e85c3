"""Command-line interface: ``differland <command>``; one module per command in ``commands/``."""
