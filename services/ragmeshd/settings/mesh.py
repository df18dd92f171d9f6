"""Settings of the mesh around the services: Envoy and `ragmesh up` (`[mesh]`), the
OpenAI-compatible adapter (`[openai]`) and the rate-limit service (`[ratelimit]`)."""

from __future__ import annotations

from pydantic import Field

from ragmeshd import defaults
from ragmeshd.settings.core import Section


class MeshSettings(Section):
    """Envoy, certificates and `ragmesh up`."""

    # When true, every server requires a client certificate signed by the mesh CA on its port
    # and calls other services with its own certificate; `ragmesh up` turns it on.
    tls: bool = False
    # Envoy's listener for clients: the only address meant to be reachable from other hosts.
    client_listen: str = defaults.ENVOY_CLIENT_LISTEN
    # Envoy's listener for service-to-service calls, loopback only.
    internal_listen: str = defaults.ENVOY_INTERNAL_LISTEN
    # Envoy's admin interface (/stats, /stats/prometheus, /clusters), loopback only.
    admin_listen: str = defaults.ENVOY_ADMIN_LISTEN
    # Replica i of a service listens on its base port + i * replica_port_step.
    replica_port_step: int = Field(defaults.REPLICA_PORT_STEP, ge=1)
    # How long a stopping server under `up` stays NOT_SERVING before it stops taking calls,
    # so Envoy's health checks (1 s interval, 2 failures) have taken it out of rotation.
    drain_s: float = Field(defaults.MESH_DRAIN_S, ge=0)
    # Self-healing: restarting children that exit without being asked (defaults.py explains).
    restart_first_delay_s: float = Field(defaults.RESTART_FIRST_DELAY_S, ge=0)
    restart_max_delay_s: float = Field(defaults.RESTART_MAX_DELAY_S, ge=0)
    restart_reset_after_s: float = Field(defaults.RESTART_RESET_AFTER_S, gt=0)
    crash_loop_exits: int = Field(defaults.CRASH_LOOP_EXITS, ge=1)
    crash_loop_window_s: float = Field(defaults.CRASH_LOOP_WINDOW_S, gt=0)
    # Logs in STATE_DIR/logs are rotated past this size, keeping this many older copies.
    log_max_bytes: int = Field(defaults.LOG_MAX_BYTES, ge=64 * 1024)
    log_keep: int = Field(defaults.LOG_KEEP, ge=1)
    # Security (issue 10): the CA private key is encrypted at rest. Its passphrase comes from
    # the environment variable named here when that is set, else from this file, which gets a
    # random passphrase on first use. The file lies outside the state folder, so a copy of
    # the state folder (a backup, an image) carries no usable CA key; only `ragmesh up` and
    # `ragmesh certs` read it, and `up` drops the variable before it starts any service.
    ca_passphrase_env: str = Field(defaults.CA_PASSPHRASE_ENV, pattern=r"^[A-Z_][A-Z0-9_]*$")
    ca_passphrase_file: str = defaults.CA_PASSPHRASE_FILE


# --- the OpenAI-compatible HTTP adapter (ragmeshd/openai_compat) ---------------------------


class OpenAISettings(Section):
    """The OpenAI-compatible HTTP adapter behind Envoy (/v1/embeddings, /v1/models,
    /v1/chat/completions)."""

    listen: str = defaults.OPENAI_LISTEN
    # Where its gRPC calls go: Envoy's internal listener under `up`, or the servers directly.
    embeddings_target: str = defaults.EMBEDDINGS_LISTEN
    coordinator_target: str = defaults.COORDINATOR_LISTEN
    embed_timeout_s: float = Field(defaults.OPENAI_EMBED_TIMEOUT_S, gt=0)
    ask_timeout_s: float = Field(defaults.OPENAI_ASK_TIMEOUT_S, gt=0)
    # The largest request body it reads; a larger one is answered 413 before any work.
    max_body_bytes: int = Field(defaults.HTTP_MAX_BODY_BYTES, ge=1024)
    # --- Kubernetes (issue 14) ---
    # A plaintext port answering only GET /healthz (503 while draining) and GET /livez: the
    # kubelet's httpGet probes present no client certificate. Empty turns it off.
    health_listen: str = ""


class RateLimitSettings(Section):
    """Envoy's rate-limit service (`ragmesh serve ratelimit`, ragmeshd/ratelimit)."""

    # Empty: a unix socket in STATE_DIR/run, for the Envoy on this host (`ragmesh up`).
    # host:port (Kubernetes: the Envoy pods call it over the network): mutual TLS when
    # mesh.tls, and only Envoy's client certificate is admitted.
    listen: str = ""
    # When the service cannot answer in time, calls of limited keys are refused (UNAVAILABLE,
    # HTTP 503) unless this is set: failing open would let anyone who can slow the service
    # down spend without limit (docs/security.md). Keys without a limit never wait on it.
    fail_open: bool = defaults.RATELIMIT_FAIL_OPEN
    # How long Envoy waits for the service's decision about a call (and a server for a work
    # charge) before that rule applies. Raise it where the machine is slow on purpose (tests
    # on 2 busy cores); every limited call can wait this long when the service is frozen.
    timeout_s: float = Field(defaults.RATELIMIT_TIMEOUT_S, gt=0)
    # Where the servers charge work to a key's bucket (runtime/work_meter.py): empty, the unix
    # socket in STATE_DIR/run; host:port (Kubernetes), over mutual TLS.
    target: str = ""


# --- Kubernetes (issue 14): certificates issued outside ragmesh ---------------------------
