"""`ragmesh db upgrade|downgrade|status`: the search database's schema migrations."""

from __future__ import annotations

import argparse
import asyncio

from ragmeshd.runtime.logs import configure_logging
from ragmeshd.settings import Settings, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser(
        "db",
        help="migrate the search database's schema",
        description="Apply, revert or list the search service's schema migrations on its"
        " PostgreSQL: the embedded one under STATE_DIR/postgres (it must be running:"
        " `ragmesh serve postgres`) or RAGMESH_SEARCH__PG_DSN. The search server applies"
        " pending migrations itself when it starts.",
    )
    actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    upgrade = actions.add_parser("upgrade", help="apply pending migrations")
    upgrade.add_argument("--to", type=int, help="stop at this version (default: the latest)")
    upgrade.set_defaults(handler=_run)
    downgrade = actions.add_parser("downgrade", help="revert applied migrations")
    downgrade.add_argument(
        "--to", type=int, help="revert down to this version; 0 reverts all (default: one step)"
    )
    downgrade.set_defaults(handler=_run)
    status = actions.add_parser("status", help="list migrations and when they were applied")
    status.set_defaults(handler=_run)
    for parser in (upgrade, downgrade, status):
        parser.add_argument("--pg-dsn", help="an external PostgreSQL (default: the embedded one)")


def _run(args: argparse.Namespace) -> int:
    overrides = {"pg_dsn": args.pg_dsn} if args.pg_dsn else {}
    settings = load_settings(search=overrides)
    configure_logging("db", settings.log_level)
    return asyncio.run(run_db(settings, args.action, getattr(args, "to", None)))


async def run_db(settings: Settings, action: str, to: int | None) -> int:
    from ragmeshd.postgres.pool import DatabaseConnectError, connect_with_retries
    from ragmeshd.search import migrate
    from ragmeshd.search.server import pg_dsn

    s = settings.search
    try:
        conn = await connect_with_retries(
            pg_dsn(settings),
            attempts=s.pg_connect_attempts,
            backoff_base_s=s.pg_connect_backoff_base_s,
        )
    except DatabaseConnectError as exc:
        print(f"ragmesh db: {exc}", flush=True)
        return 1
    try:
        if action == "upgrade":
            done = await migrate.MIGRATIONS.upgrade(conn, to)
            print(f"applied: {', '.join(map(str, done)) or 'nothing (up to date)'}")
        elif action == "downgrade":
            if to is None:
                applied = [m.version for m in await migrate.MIGRATIONS.status(conn) if m.applied_at]
                to = applied[-2] if len(applied) >= 2 else 0
            done = await migrate.MIGRATIONS.downgrade(conn, to)
            print(f"reverted: {', '.join(map(str, done)) or 'nothing'}")
        for entry in await migrate.MIGRATIONS.status(conn):
            when = entry.applied_at.isoformat(timespec="seconds") if entry.applied_at else "pending"
            print(f"{entry.version:04d}  {entry.name:<32} {when}")
    except migrate.MigrationError as exc:
        print(f"ragmesh db: {exc}", flush=True)
        return 2
    finally:
        await conn.close()
    return 0
