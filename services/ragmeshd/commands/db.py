"""`ragmesh db upgrade|downgrade|status`: the schema migrations of both schemas in the
database, search's and the coordinator's (each with its own migrations table and lock)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from ragmeshd.commands.convention import (
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CommandError,
    add_json_option,
    print_json,
    read_secret_file,
    settings_or_exit,
)
from ragmeshd.postgres.migrations import MigrationSet
from ragmeshd.runtime.logs import configure_logging
from ragmeshd.settings import Settings

SCHEMAS = ("search", "coordinator")


def register(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser(
        "db",
        help="migrate the database's schemas (search and coordinator)",
        description="Apply, revert or list the schema migrations of the search service and of"
        " the coordinator (interactions) on their PostgreSQL: the embedded one under"
        " STATE_DIR/postgres (it must be running: `ragmesh up` or `ragmesh serve postgres`),"
        " or RAGMESH_SEARCH__PG_DSN / RAGMESH_COORDINATOR__PG_DSN, or --pg-dsn-file. Each"
        " server applies its pending migrations itself when it starts.",
    )
    actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    upgrade = actions.add_parser("upgrade", help="apply pending migrations")
    upgrade.add_argument(
        "--to", type=int, help="stop at this version (default: the latest; needs --schema)"
    )
    upgrade.set_defaults(handler=_run)
    downgrade = actions.add_parser("downgrade", help="revert applied migrations of one schema")
    downgrade.add_argument(
        "--to", type=int, help="revert down to this version; 0 reverts all (default: one step)"
    )
    downgrade.set_defaults(handler=_run)
    status = actions.add_parser("status", help="list migrations and when they were applied")
    status.set_defaults(handler=_run)
    for parser in (upgrade, downgrade, status):
        parser.add_argument(
            "--schema",
            choices=[*SCHEMAS, "all"],
            default=None,
            help="which schema (default: all for upgrade and status; downgrade needs one)",
        )
        parser.add_argument(
            "--pg-dsn-file",
            type=Path,
            metavar="FILE",
            help="a file holding the DSN of an external PostgreSQL for both schemas (default:"
            " the settings' DSNs, else the embedded server)",
        )
        add_json_option(parser)


def _schemas(args: argparse.Namespace) -> list[str]:
    chosen = args.schema or ("all" if args.action != "downgrade" else None)
    if chosen is None:
        raise CommandError("downgrade needs --schema search or --schema coordinator", EXIT_USAGE)
    if chosen == "all" and getattr(args, "to", None) is not None:
        raise CommandError("--to needs --schema search or --schema coordinator", EXIT_USAGE)
    return list(SCHEMAS) if chosen == "all" else [chosen]


def _run(args: argparse.Namespace) -> int:
    schemas = _schemas(args)
    settings = settings_or_exit()
    configure_logging("db", "WARNING")
    dsn = read_secret_file(args.pg_dsn_file, "a PostgreSQL DSN") if args.pg_dsn_file else None
    document: dict[str, Any] = {"schemas": {}}
    for schema in schemas:
        result = asyncio.run(
            run_schema(settings, schema, dsn, args.action, getattr(args, "to", None))
        )
        document["schemas"][schema] = result
        if not args.json:
            _print_text(schema, result)
    if args.json:
        print_json(document)
    return 0


def _print_text(schema: str, result: dict[str, Any]) -> None:
    print(f"{schema} schema:")
    if "applied" in result:
        print(f"  applied: {', '.join(map(str, result['applied'])) or 'nothing (up to date)'}")
    if "reverted" in result:
        print(f"  reverted: {', '.join(map(str, result['reverted'])) or 'nothing'}")
    for entry in result["migrations"]:
        print(f"  {entry['version']:04d}  {entry['name']:<32} {entry['applied_at'] or 'pending'}")


def _migrations(schema: str) -> MigrationSet:
    if schema == "search":
        from ragmeshd.search import migrate as search_migrate

        return search_migrate.MIGRATIONS
    from ragmeshd.coordinator import migrate as coordinator_migrate

    return coordinator_migrate.MIGRATIONS


def _dsn(settings: Settings, schema: str) -> str:
    if schema == "search":
        from ragmeshd.search.server import pg_dsn as search_dsn

        return search_dsn(settings)
    from ragmeshd.coordinator.server import pg_dsn as coordinator_dsn

    return coordinator_dsn(settings)


async def run_schema(
    settings: Settings, schema: str, dsn: str | None, action: str, to: int | None
) -> dict[str, Any]:
    """Apply `action` to one schema; what it did and the migrations' state afterwards."""
    from ragmeshd.postgres.migrations import MigrationError
    from ragmeshd.postgres.pool import DatabaseConnectError, connect_with_retries

    s = settings.search
    migrations = _migrations(schema)
    try:
        conn = await connect_with_retries(
            dsn or _dsn(settings, schema),
            attempts=s.pg.connect_attempts,
            backoff_base_s=s.pg.connect_backoff_base_s,
        )
    except DatabaseConnectError as exc:
        raise CommandError(str(exc), EXIT_UNREACHABLE) from None
    result: dict[str, Any] = {}
    try:
        if action == "upgrade":
            result["applied"] = await migrations.upgrade(conn, to)
        elif action == "downgrade":
            if to is None:
                applied = [m.version for m in await migrations.status(conn) if m.applied_at]
                to = applied[-2] if len(applied) >= 2 else 0
            result["reverted"] = await migrations.downgrade(conn, to)
        result["migrations"] = [
            {
                "version": entry.version,
                "name": entry.name,
                "applied_at": (
                    entry.applied_at.isoformat(timespec="seconds") if entry.applied_at else None
                ),
            }
            for entry in await migrations.status(conn)
        ]
    except MigrationError as exc:
        raise CommandError(f"{schema}: {exc}", EXIT_USAGE) from None
    finally:
        await conn.close()
    return result
