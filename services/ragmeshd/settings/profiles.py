"""Configuration profiles: named sets of defaults chosen with RAGMESH_PROFILE (or `profile` in
the config file), and the rules a profile enforces once every source is merged.

Precedence, highest first: command-line flags, RAGMESH_* environment variables, the TOML file
named by RAGMESH_CONFIG_FILE, the profile, then ragmeshd/defaults.py. A profile only changes
defaults, so anything set explicitly wins over it; but `production` also refuses, at start,
settings that would put plaintext or unauthenticated traffic anywhere.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

Profile = Literal["dev", "production"]
PROFILES: tuple[Profile, ...] = ("dev", "production")
DEFAULT_PROFILE: Profile = "dev"

# The defaults each profile changes, as the nested settings they replace. `dev` is the plain
# defaults of ragmeshd/defaults.py.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "dev": {},
    "production": {
        # Every hop over mutual TLS and every call with a key.
        "mesh": {"tls": True},
        "server": {
            "require_api_key": True,
            # Stricter than dev: 4 MiB messages (dev 16 MiB); a stopping server drains for 5 s.
            "max_message_bytes": 4 * 1024 * 1024,
            "shutdown_drain_s": 5.0,
        },
        "embeddings": {"max_client_batch": 32, "max_input_chars": 8000},
        "search": {"max_top_k": 50},
        "coordinator": {"max_export_interactions": 100_000},
        # 1% of new traces, as the telemetry settings suggest for production.
        "telemetry": {"sampling_ratio": 0.01},
        "log_level": "INFO",
    },
}


def profile_defaults(profile: str) -> dict[str, Any]:
    if profile not in PROFILE_DEFAULTS:
        raise ValueError(f"unknown profile {profile!r}: one of {list(PROFILES)}")
    return PROFILE_DEFAULTS[profile]


def production_problems(
    values: dict[str, Any], libpq_env: dict[str, str] | None = None
) -> list[str]:
    """What the production profile refuses in the merged settings (a model_dump()), each as
    `path: reason`. Empty when all is well. `libpq_env` holds PGSSLMODE and PGSSLROOTCERT,
    which the PostgreSQL client applies to a DSN that names neither."""
    problems = []
    mesh, server = values["mesh"], values["server"]
    if not mesh["tls"]:
        problems.append("mesh.tls: must be true in production (no plaintext between processes)")
    if not server["require_api_key"]:
        problems.append("server.require_api_key: must be true in production")
    for path, dsn in (
        (f"{section}.pg.{field}", values[section]["pg"][field])
        for section in ("search", "coordinator")
        for field in ("dsn", "migrate_dsn")
    ):
        if dsn and not _local(urlsplit(dsn).hostname):
            problems += [f"{path}: {p}" for p in _postgres_tls_problems(dsn, libpq_env or {})]
    for side in ("local", "remote"):
        url = values["coordinator"][f"{side}_url"]
        if url and urlsplit(url).scheme != "https" and not _local(urlsplit(url).hostname):
            problems.append(f"coordinator.{side}_url: must be https:// in production")
    otlp = values["telemetry"]["otlp_endpoint"]
    if otlp:
        host = otlp.split("://")[-1].rsplit(":", 1)[0].strip("[]")
        if not _local(host):
            problems.append(
                "telemetry.otlp_endpoint: OTLP is sent in plaintext, so in production only to a"
                " collector on this host"
            )
    return problems


def _postgres_tls_problems(dsn: str, libpq_env: dict[str, str]) -> list[str]:
    """A remote PostgreSQL must be verified: sslmode verify-full, from the DSN, else from
    PGSSLMODE, as the client reads them. (Its CA: sslrootcert or PGSSLROOTCERT, else the
    client's ~/.postgresql/root.crt; a missing file fails the connection, not silently.)"""
    query = {key: values[-1] for key, values in parse_qs(urlsplit(dsn).query).items()}
    sslmode = query.get("sslmode") or libpq_env.get("PGSSLMODE", "")
    if sslmode != "verify-full":
        return [
            "a remote PostgreSQL needs sslmode=verify-full in production (in the DSN, or"
            f" PGSSLMODE=verify-full for a DSN without sslmode); it has {sslmode or 'none'}"
        ]
    return []


def _local(host: str | None) -> bool:
    """A unix socket (no host), localhost or a loopback address."""
    if not host or host == "localhost" or host.startswith("/"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
