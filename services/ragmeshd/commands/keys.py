"""`ragmesh keys create|list|rotate|revoke`: the API keys every RPC needs."""

from __future__ import annotations

import argparse
import sys
import time

from ragmeshd.commands.convention import add_json_option, print_json, settings_or_exit
from ragmeshd.runtime.audit import open_audit_file
from ragmeshd.runtime.keystore import (
    DEFAULT_ROTATION_GRACE_S,
    ApiKeyError,
    KeyStore,
    RateLimit,
    StoredKey,
    parse_duration,
    parse_rate,
)
from ragmeshd.runtime.logs import JsonFormatter
from ragmeshd.runtime.scopes import DEFAULT_SCOPES, SCOPES, parse_scopes
from ragmeshd.runtime.tenancy import TenancyError, parse_collections, parse_groups
from ragmeshd.state import MeshLayout


def register(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="create, list, rotate and revoke API keys",
        description="API keys live hashed in STATE_DIR/keys/keys.json; servers re-read it within"
        " a second, so a new, rotated or revoked key takes effect without a restart.",
    )
    actions = keys.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a key and print it (shown only once)")
    create.add_argument("name", help="what the key is for, e.g. a person or a program")
    create.add_argument(
        "--scopes",
        default=",".join(DEFAULT_SCOPES),
        help=f"comma-separated, of: {', '.join(SCOPES)} (default: {','.join(DEFAULT_SCOPES)})",
    )
    create.add_argument("--expires", metavar="DURATION", help="e.g. 30d, 12h: then refused")
    create.add_argument(
        "--rate", metavar="N/UNIT", help="calls allowed per s, m or h (e.g. 50/s), mesh-wide"
    )
    create.add_argument(
        "--burst", type=int, metavar="N", help="calls allowed at once (default: one second's)"
    )
    create.add_argument(
        "--collections",
        default="*",
        metavar="PATTERNS",
        help="comma-separated collection names or patterns it may use, e.g. 'team-a-*,shared'"
        " (default: every collection)",
    )
    create.add_argument(
        "--groups",
        default="",
        metavar="GROUPS",
        help="comma-separated groups: it sees documents whose `acl` names one of them"
        " (default: none, so only documents without `acl`)",
    )
    create.set_defaults(handler=_create)
    listing = actions.add_parser("list", help="every key: id, name, scopes, limits, expiry")
    add_json_option(listing)
    listing.set_defaults(handler=_list)
    rotate = actions.add_parser(
        "rotate", help="issue a replacement (same name, scopes, limit); the old one expires later"
    )
    rotate.add_argument("key_id", help="the id shown by `ragmesh keys list`")
    rotate.add_argument(
        "--grace",
        default=f"{DEFAULT_ROTATION_GRACE_S / 3600:.0f}h",
        metavar="DURATION",
        help="how long the old key keeps working (default 24h; 0s ends it now)",
    )
    rotate.set_defaults(handler=_rotate)
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", help="the id shown by `ragmesh keys list`")
    revoke.set_defaults(handler=_revoke)


def _store() -> KeyStore:
    settings = settings_or_exit()
    # Key changes are audit events: STATE_DIR/logs/audit.log (runtime/audit.py).
    open_audit_file(MeshLayout(settings.state_dir).logs_dir, JsonFormatter("keys"))
    return KeyStore(MeshLayout(settings.state_dir).keys_dir)


def _create(args: argparse.Namespace) -> int:
    try:
        scopes = parse_scopes(args.scopes)
        expires_at = time.time() + parse_duration(args.expires) if args.expires else None
        rate = None
        if args.rate:
            per_second = parse_rate(args.rate)
            burst = args.burst if args.burst is not None else max(1, round(per_second))
            if burst < 1:
                raise ValueError("--burst must be at least 1")
            rate = RateLimit(per_second, burst)
        elif args.burst is not None:
            raise ValueError("--burst needs --rate")
        key = _store().create(
            args.name,
            scopes=scopes,
            expires_at=expires_at,
            rate=rate,
            collections=parse_collections(args.collections),
            groups=parse_groups(args.groups),
        )
    except (ApiKeyError, ValueError, TenancyError) as exc:
        print(f"ragmesh keys create: {exc}", file=sys.stderr)
        return 2
    print(key)
    print("Send it as `authorization: Bearer <key>`; it is not shown again.", file=sys.stderr)
    return 0


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds)) if seconds else "never"


def _state(key: StoredKey) -> str:
    if key.revoked:
        return "revoked"
    if key.expired():
        return "expired"
    return f"rotated to {key.rotated_to}" if key.rotated_to else "active"


def _list(args: argparse.Namespace) -> int:
    keys = _store().load()
    if args.json:
        print_json({"keys": [_key_document(key) for key in keys]})
        return 0
    print(
        f"{'id':<14} {'name':<22} {'scopes':<36} {'rate':<14} {'created (UTC)':<17}"
        f" {'expires (UTC)':<17} state"
    )
    for key in keys:
        limit = key.rate_limit
        rate = f"{limit.per_second:g}/s b{limit.burst}" if limit else "-"
        print(
            f"{key.key_id:<14} {key.name:<22} {','.join(key.scopes) or '-':<36} {rate:<14}"
            f" {_when(key.created_at):<17} {_when(key.expires_at):<17} {_state(key)}"
        )
    return 0


def _rotate(args: argparse.Namespace) -> int:
    try:
        grace_s = 0.0 if args.grace.strip() in ("0", "0s") else parse_duration(args.grace)
        key, old = _store().rotate(args.key_id, grace_s)
    except (ApiKeyError, ValueError) as exc:
        print(f"ragmesh keys rotate: {exc}", file=sys.stderr)
        return 1
    print(key)
    print(
        f"Replaces {old.key_id} ({old.name}), which stops working at {_when(old.expires_at)} UTC."
        " The new key is not shown again.",
        file=sys.stderr,
    )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    try:
        key = _store().revoke(args.key_id)
    except ApiKeyError as exc:
        print(f"ragmesh keys revoke: {exc}", file=sys.stderr)
        return 1
    print(f"revoked {key.key_id} ({key.name})")
    return 0


def _key_document(key: StoredKey) -> dict[str, object]:
    """What `keys list --json` shows of a key: never its secret or the secret's hash."""
    limit = key.rate_limit
    return {
        "id": key.key_id,
        "name": key.name,
        "scopes": list(key.scopes),
        "collections": list(key.collections),
        "groups": list(key.groups),
        "rate_per_s": limit.per_second if limit else None,
        "burst": limit.burst if limit else None,
        "created_at": _when(key.created_at),
        "expires_at": _when(key.expires_at),
        "state": _state(key),
    }
