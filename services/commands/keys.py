"""`ragmesh keys create|list|revoke`: the API keys every RPC needs."""

from __future__ import annotations

import argparse
import sys
import time

from services.config import load_settings
from services.runtime.auth import ApiKeyError, KeyStore


def register(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description="API keys live hashed in STATE_DIR/keys/keys.json; servers re-read it within"
        " a second, so a revoked key stops working without a restart.",
    )
    actions = keys.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a key and print it (shown only once)")
    create.add_argument("name", help="what the key is for, e.g. a person or a program")
    create.set_defaults(handler=_create)
    listing = actions.add_parser("list", help="every key: id, name, created, revoked")
    listing.set_defaults(handler=_list)
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", help="the id shown by `ragmesh keys list`")
    revoke.set_defaults(handler=_revoke)


def _store() -> KeyStore:
    return KeyStore(load_settings().state_dir / "keys")


def _create(args: argparse.Namespace) -> int:
    try:
        key = _store().create(args.name)
    except ApiKeyError as exc:
        print(f"ragmesh keys create: {exc}", file=sys.stderr)
        return 2
    print(key)
    print("Send it as `authorization: Bearer <key>`; it is not shown again.", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    print(f"{'id':<14} {'name':<28} {'created (UTC)':<20} state")
    for key in _store().load():
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(key.created_at))
        state = "revoked" if key.revoked else "active"
        print(f"{key.key_id:<14} {key.name:<28} {created:<20} {state}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    try:
        key = _store().revoke(args.key_id)
    except ApiKeyError as exc:
        print(f"ragmesh keys revoke: {exc}", file=sys.stderr)
        return 1
    print(f"revoked {key.key_id} ({key.name})")
    return 0
