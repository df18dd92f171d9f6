"""Subcommands of the `ragmesh` CLI, one module each; each module has `register(subparsers)`."""
