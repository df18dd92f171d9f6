"""The convention every `ragmesh` command follows (docs/cli.md):

- `--state-dir` (or RAGMESH_STATE_DIR) names the mesh's state folder, before the command;
- `--json` prints one JSON document on stdout and nothing else there;
- messages and errors go to stderr; exit codes: 0 ok, 1 failure, 2 usage (a bad flag or
  setting), 3 the mesh is unreachable;
- a bad setting is one readable line per key, never a traceback;
- secrets come only from files (`--api-key-file`, `--pg-dsn-file`, `--llm-api-key-file`);
- durations are spelled `500ms`, `30s`, `5m`, `24h`, `30d`;
- commands that call a running mesh go through Envoy with the state folder's client
  certificate (mutual TLS) and a key (`--api-key-file`, default the admin key).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
from pydantic import ValidationError

from ragmeshd.runtime.channels import metadata_interceptors
from ragmeshd.runtime.client_retries import RetryIdempotent
from ragmeshd.runtime.keystore import parse_duration as parse_duration_text
from ragmeshd.runtime.tls import channel_credentials
from ragmeshd.settings import Settings, load_settings
from ragmeshd.state import MeshLayout
from ragmeshd.supervisor.plan import MeshState, reachable_endpoint

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

# The largest gRPC answer a CLI command takes (a search with many long passages).
MAX_RECEIVE_BYTES = 64 * 1024 * 1024


class CommandError(Exception):
    """A failure the command reports as one line on stderr with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="the mesh's state folder: certificates, keys, logs, sockets (default: .ragmesh,"
        " or RAGMESH_STATE_DIR)",
    )


def apply_global_options(args: argparse.Namespace) -> None:
    """Make `--state-dir` the state folder of this process and of every process it starts."""
    if getattr(args, "state_dir", None) is not None:
        os.environ["RAGMESH_STATE_DIR"] = str(args.state_dir)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout instead of text"
    )


def print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def settings_or_exit(**overrides: object) -> Settings:
    """The process's settings, or a CommandError (exit 2) naming each bad key in one line."""
    try:
        return load_settings(**overrides)
    except ValidationError as error:
        raise CommandError(settings_problem(error), EXIT_USAGE) from None


def settings_problem(error: ValidationError) -> str:
    lines = ["invalid settings:"]
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(settings)"
        env = "RAGMESH_" + "__".join(str(part).upper() for part in problem["loc"])
        lines.append(f"  {key} ({env}): {problem['msg']}")
    return "\n".join(lines)


def parse_duration(text: str) -> float:
    """Seconds from `500ms`, `30s`, `5m`, `24h` or `30d`, as an argparse type."""
    try:
        return parse_duration_text(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def read_secret_file(path: Path, what: str) -> str:
    """A secret from a file (never from a flag: flags show in `ps` and shell history)."""
    try:
        secret = path.read_text().strip()
    except OSError as error:
        raise CommandError(
            f"cannot read {what} from {path}: {error.strerror}", EXIT_USAGE
        ) from None
    if not secret:
        raise CommandError(f"{path} is empty; it should hold {what}", EXIT_USAGE)
    return secret


def add_mesh_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        metavar="HOST:PORT",
        help="Envoy's client listener (default: the running mesh's, from STATE_DIR/mesh.json)",
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help="a file holding the API key to call with (default: STATE_DIR/keys/admin.key)",
    )
    parser.add_argument(
        "--timeout",
        type=parse_duration,
        default=60.0,
        metavar="DURATION",
        help="the deadline of each call (default 60s)",
    )


def add_target_options(parser: argparse.ArgumentParser, what: str) -> None:
    """`--target` and `--api-key-file` of a bench or eval that can measure a running mesh
    instead of servers it starts."""
    parser.add_argument(
        "--target",
        metavar="HOST:PORT",
        help=f"{what} a running mesh through this Envoy client listener (mutual TLS with the"
        " state folder's client certificate, the key of --api-key-file) instead of servers"
        " started here",
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help="with --target: the API key to call with (default: STATE_DIR/keys/admin.key)",
    )


def mesh_target(settings: Settings, target: str | None) -> str:
    """Where to reach Envoy: `--target`, else the running mesh's listener, else the setting."""
    if target:
        return target
    state_file = MeshLayout(settings.state_dir).mesh_state
    listen = MeshState.read(state_file).client_listen if state_file.exists() else ""
    return reachable_endpoint(listen or settings.mesh.client_listen)


def check_mesh_client(settings: Settings, args: argparse.Namespace) -> Any:
    """The state folder's client certificates, and the API key file readable, before any
    work starts; a CommandError (exit 3 or 2) otherwise."""
    layout = MeshLayout(settings.state_dir)
    certs = layout.certificates()
    missing = [p for p in (certs.ca, certs.client.cert, certs.client.key) if not p.exists()]
    if missing:
        raise CommandError(
            f"{missing[0]} does not exist: start the mesh once with `ragmesh up` (or pass"
            " --state-dir of the mesh to call)",
            EXIT_UNREACHABLE,
        )
    read_secret_file(getattr(args, "api_key_file", None) or layout.admin_key, "an API key")
    return certs


def mesh_channel(
    settings: Settings, args: argparse.Namespace, *, retry_idempotent: bool = False
) -> grpc.aio.Channel:
    """A channel to the mesh through Envoy: mutual TLS with the state folder's client
    certificate, the key from `--api-key-file` (default the admin key) on every call.
    `retry_idempotent`: retry idempotent calls on UNAVAILABLE and RESOURCE_EXHAUSTED after
    the server's pushback (ragmeshd/runtime/client_retries.py; ingest, search, eval; never
    a bench, which counts refusals)."""
    layout = MeshLayout(settings.state_dir)
    certs = check_mesh_client(settings, args)
    key_file = getattr(args, "api_key_file", None) or layout.admin_key
    api_key = read_secret_file(key_file, "an API key")
    return grpc.aio.secure_channel(
        mesh_target(settings, getattr(args, "target", None)),
        channel_credentials(certs.ca, certs.client.cert, certs.client.key),
        interceptors=[
            *([RetryIdempotent()] if retry_idempotent else []),
            *metadata_interceptors(api_key),
        ],
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.max_send_message_length", MAX_RECEIVE_BYTES),
        ],
    )


def rpc_failure(error: grpc.aio.AioRpcError, target: str) -> CommandError:
    """The CommandError for a failed call: UNAVAILABLE before any answer means the mesh is
    unreachable (exit 3); anything else is the server's answer (exit 1)."""
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return CommandError(
            f"the mesh at {target} is unreachable: {error.details()}", EXIT_UNREACHABLE
        )
    return CommandError(f"{code.name}: {error.details()}", EXIT_FAILURE)
