"""Subcommands of ``python -m scorefn``; each module defines ``register(subparsers)``."""
