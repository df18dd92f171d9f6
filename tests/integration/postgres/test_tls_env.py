"""PostgreSQL over TLS, verified through libpq's variables only, as the Kubernetes manifests
configure search and the coordinator: CloudNativePG's URI names no sslmode, the pods set
PGSSLMODE=verify-full and PGSSLROOTCERT (its CA). A real PostgreSQL with TLS on a loopback
port; the connection goes through ragmeshd.postgres.pool, the services' own path, so this
also proves nothing there overrides what the variables ask of the installed asyncpg.

The embedded build (pgserver) has no TLS; Debian's PostgreSQL server does (`make test-tools`
installs it), run the same way as the embedded one, from its own bin/ directory."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragmeshd import defaults
from ragmeshd.pki import authority, certs
from ragmeshd.postgres import embedded
from ragmeshd.postgres.embedded import SERVICE_USER_AS_ROOT, EmbeddedPostgres
from ragmeshd.postgres.pool import create_pool
from tests.helpers import ServerProcess, free_port, run_coroutine, wait_postgres


def _debian_bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    assert found, "Debian's PostgreSQL server is not installed: run `make test-tools`"
    return found[-1].parent


# The name the server's certificate carries and the DSN dials (as ragmesh-db-rw.<namespace>
# in a cluster).
HOST = "localhost"


def _issue_server_certificate(ca_dir: Path, out: Path) -> Path:
    """A CA under `ca_dir`, a server certificate for HOST in `out`; the CA's path."""
    ca_state = certs.ensure_certificates(ca_dir)
    ca = authority.load_ca(ca_state.ca, ca_dir / "ca-key.pem", need_key=True)
    identity = certs.Identity(out / "server.crt", out / "server.key")
    leaf = certs.LeafSpec(identity, HOST, (HOST,), "spiffe://test/postgres", is_server=True)
    certs.issue_leaf(ca, leaf, valid_days=2)
    return ca_state.ca


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[tuple[EmbeddedPostgres, Path, Path]]:
    """(server, its CA, another CA) with PostgreSQL taking TLS on 127.0.0.1."""
    bin_dir = _debian_bin_dir()
    # Outside pytest's base directory: a concurrent pytest run resets it to 0700, which the
    # PostgreSQL user (as root) could not traverse.
    root = Path(tempfile.mkdtemp(prefix="ragmesh-pg-tls-"))
    try:
        server = EmbeddedPostgres(root / "state", port=free_port())
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(embedded, "postgres_bin_dir", lambda: bin_dir)
            server.initialize()
        ca = _issue_server_certificate(root / "ca", server.data_dir)
        other_ca = certs.ensure_certificates(root / "other-ca").ca
        if os.geteuid() == 0:  # PostgreSQL runs as its own user and wants its key 0600
            shutil.chown(server.data_dir / "server.key", SERVICE_USER_AS_ROOT)
            shutil.chown(server.data_dir / "server.crt", SERVICE_USER_AS_ROOT)
        settings = {
            **defaults.PG_EMBEDDED_SERVER_SETTINGS,
            "listen_addresses": "127.0.0.1",
            "ssl": "on",
            "ssl_cert_file": "server.crt",
            "ssl_key_file": "server.key",
        }
        tls_server = EmbeddedPostgres(server.state_dir, port=server.port, server_settings=settings)
        log = root / "postgres.log"
        runner = (
            "import ctypes, json, sys; from pathlib import Path;"
            " import ragmeshd.postgres.embedded as e;"
            " a = json.loads(sys.argv[1]); e.postgres_bin_dir = lambda: Path(a[3]);"
            " sys.exit(e.EmbeddedPostgres(Path(a[0]), port=a[1], server_settings=a[2]).run())"
        )
        argument = json.dumps([str(tls_server.state_dir), tls_server.port, settings, str(bin_dir)])
        with log.open("wb") as log_file:
            popen = subprocess.Popen(
                [sys.executable, "-c", runner, argument],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        process = ServerProcess(popen, "", log)
        try:
            wait_postgres(tls_server.dsn(), process)  # over its unix socket
            yield tls_server, ca, other_ca
        finally:
            process.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _tls_in_use(dsn: str) -> bool:
    async def connect() -> bool:
        pool = await create_pool(
            dsn, application_name="tls-test", min_size=1, max_size=1, statement_timeout_ms=5000
        )
        try:
            return bool(
                await pool.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            )
        finally:
            await pool.close()

    return run_coroutine(connect)


def test_pgsslmode_and_pgsslrootcert_make_the_connection_verified(
    tls_postgres: tuple[EmbeddedPostgres, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca, other_ca = tls_postgres
    # A URI as CloudNativePG writes it: host and port, no sslmode, no sslrootcert.
    dsn = f"postgresql://{server.user}@{HOST}:{server.port}/{server.database}"
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    monkeypatch.setenv("PGSSLROOTCERT", str(ca))
    assert _tls_in_use(dsn)

    # A server certificate from another CA is refused...
    monkeypatch.setenv("PGSSLROOTCERT", str(other_ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_in_use(dsn)
    # ...and so is a name the certificate does not carry (verify-full, not verify-ca).
    monkeypatch.setenv("PGSSLROOTCERT", str(ca))
    with pytest.raises(ssl.SSLCertVerificationError, match=r"(?i)hostname|IP address"):
        _tls_in_use(f"postgresql://{server.user}@127.0.0.1:{server.port}/{server.database}")
