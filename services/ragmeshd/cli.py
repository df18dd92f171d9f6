"""The `ragmesh` command."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pydantic import ValidationError

from ragmeshd import __version__
from ragmeshd.commands.convention import (
    EXIT_USAGE,
    CommandError,
    add_global_options,
    apply_global_options,
    settings_problem,
)
from ragmeshd.runtime.private_files import restrict_umask

# Each module adds its subcommands with `register(subparsers)` and sets `handler` on them.
COMMAND_MODULES = [
    "ragmeshd.commands.serve",
    "ragmeshd.commands.up",
    "ragmeshd.commands.background",
    "ragmeshd.commands.bench",
    "ragmeshd.commands.status",
    "ragmeshd.commands.ask",
    "ragmeshd.commands.ingest",
    "ragmeshd.commands.documents",
    "ragmeshd.commands.search",
    "ragmeshd.commands.certs",
    "ragmeshd.commands.keys",
    "ragmeshd.commands.db",
    "ragmeshd.commands.eval",
    "ragmeshd.commands.config",
    "ragmeshd.commands.kubernetes",
    "ragmeshd.commands.profile",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragmesh",
        description="A self-hostable retrieval mesh: embeddings, search and a RAG coordinator"
        " as gRPC services behind Envoy. Settings come from flags, RAGMESH_* environment"
        " variables and the TOML file named by RAGMESH_CONFIG_FILE. Exit codes: 0 ok, 1"
        " failure, 2 usage (a bad flag or setting), 3 the mesh is unreachable (docs/cli.md).",
    )
    add_global_options(parser)
    parser.add_argument("--version", action="version", version=f"ragmesh {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    # Models and tokenizers are loaded from local directories only; never reach for a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Keys, logs, certificates and configs this process or its children write are theirs
    # alone (ragmeshd/runtime/private_files.py).
    restrict_umask()
    args = build_parser().parse_args(argv)
    apply_global_options(args)
    try:
        exit_code = args.handler(args)
    except CommandError as error:
        print(f"ragmesh {args.command}: {error}", file=sys.stderr)
        exit_code = error.exit_code
    except ValidationError as error:
        # A bad setting read anywhere in the command: one line per key, never a traceback.
        print(f"ragmesh {args.command}: {settings_problem(error)}", file=sys.stderr)
        exit_code = EXIT_USAGE
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
