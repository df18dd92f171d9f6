"""`ragmesh db upgrade|downgrade|status`: the schema migrations of both schemas in the
database, search's and the coordinator's (each with its own migrations table and lock); `ragmesh
db purge-interactions`: the retention of interactions."""

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
    parse_duration,
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
    _register_purge(actions)
    _register_dump(actions)
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


def _register_purge(actions: argparse._SubParsersAction) -> None:
    purge = actions.add_parser(
        "purge-interactions",
        help="delete interactions (users' questions and answers) older than an age",
        description="Delete the coordinator's interactions, with their feedback, stored more"
        " than --older-than ago (default: coordinator.interactions_retention_days,"
        " RAGMESH_COORDINATOR__INTERACTIONS_RETENTION_DAYS). Run it daily from cron or a"
        " systemd timer to keep a retention limit.",
    )
    purge.add_argument(
        "--older-than",
        type=parse_duration,
        metavar="DURATION",
        help="the age beyond which interactions go, e.g. 30d (default: the retention setting)",
    )
    purge.add_argument(
        "--dry-run", action="store_true", help="count what would be deleted, delete nothing"
    )
    purge.add_argument(
        "--pg-dsn-file",
        type=Path,
        metavar="FILE",
        help="a file holding the DSN of an external PostgreSQL (default: the coordinator's)",
    )
    add_json_option(purge)
    purge.set_defaults(handler=_purge)


def _purge(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    configure_logging("db", "WARNING")
    older_than_s = args.older_than
    if older_than_s is None:
        days = settings.coordinator.interactions_retention_days
        if days == 0:
            raise CommandError(
                "no age given: pass --older-than (e.g. 30d) or set"
                " RAGMESH_COORDINATOR__INTERACTIONS_RETENTION_DAYS",
                EXIT_USAGE,
            )
        older_than_s = days * 86_400.0
    dsn = read_secret_file(args.pg_dsn_file, "a PostgreSQL DSN") if args.pg_dsn_file else None
    count = asyncio.run(_purge_schema(settings, dsn, older_than_s, args.dry_run))
    if args.json:
        print_json({"older_than_s": older_than_s, "dry_run": args.dry_run, "interactions": count})
    else:
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{verb} {count} interactions older than {older_than_s / 86_400:g} days")
    return 0


async def _purge_schema(
    settings: Settings, dsn: str | None, older_than_s: float, dry_run: bool
) -> int:
    from ragmeshd.coordinator import retention
    from ragmeshd.postgres.pool import DatabaseConnectError, connect_with_retries

    pg = settings.search.pg
    try:
        conn = await connect_with_retries(
            dsn or _dsn(settings, "coordinator"),
            attempts=pg.connect_attempts,
            backoff_base_s=pg.connect_backoff_base_s,
        )
    except DatabaseConnectError as exc:
        raise CommandError(str(exc), EXIT_UNREACHABLE) from None
    try:
        if dry_run:
            return await retention.count_older_than(conn, older_than_s)
        return await retention.purge_older_than(conn, older_than_s)
    finally:
        await conn.close()


def _register_dump(actions: argparse._SubParsersAction) -> None:
    backup = actions.add_parser(
        "backup",
        help="write the database (both schemas) to a file with pg_dump",
        description="pg_dump --format=custom of the search database (both schemas when the"
        " coordinator shares it, the default) into FILE, from a running server; the servers"
        " may keep serving.",
    )
    backup.add_argument("file", type=Path, metavar="FILE", help="the backup file to write")
    restore = actions.add_parser(
        "restore",
        help="replace the database's tables with a backup's (pg_restore)",
        description="pg_restore --clean of a `ragmesh db backup` FILE, in one transaction."
        " Stop the mesh first and run the database alone (`ragmesh serve postgres`): the"
        " servers keep caches of what they read.",
    )
    restore.add_argument("file", type=Path, metavar="FILE", help="a `ragmesh db backup` file")
    for parser in (backup, restore):
        parser.add_argument(
            "--pg-dsn-file",
            type=Path,
            metavar="FILE",
            help="a file holding the DSN of an external PostgreSQL (default: search's DSN,"
            " else the embedded server)",
        )
        add_json_option(parser)
        parser.set_defaults(handler=_dump)


def _dump(args: argparse.Namespace) -> int:
    from ragmeshd.postgres import dump

    settings = settings_or_exit()
    dsn = read_secret_file(args.pg_dsn_file, "a PostgreSQL DSN") if args.pg_dsn_file else None
    dsn = dsn or _dsn(settings, "search")
    if args.action == "restore" and not args.file.is_file():
        raise CommandError(f"{args.file}: no such backup file", EXIT_USAGE)
    build = dump.backup_command if args.action == "backup" else dump.restore_command
    try:
        dump.run(build(dsn, args.file))
    except dump.DumpError as error:
        raise CommandError(str(error)) from None
    size = args.file.stat().st_size
    if args.json:
        print_json({"action": args.action, "file": str(args.file), "bytes": size})
    else:
        verb = "wrote" if args.action == "backup" else "restored"
        print(f"{verb} {args.file} ({size} bytes)")
    return 0


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
    """The database itself (pg.migrate_dsn when set): these commands hold one session for a
    lock, a dump or a purge, which a transaction-pooling PgBouncer would not keep."""
    if schema == "search":
        from ragmeshd.search.server import pg_dsn as search_dsn

        return settings.search.pg.migrate_dsn or search_dsn(settings)
    from ragmeshd.coordinator.server import pg_address
    from ragmeshd.coordinator.server import pg_dsn as coordinator_dsn

    return pg_address(settings).migrate_dsn or coordinator_dsn(settings)


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
