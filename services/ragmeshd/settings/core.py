"""What every settings section shares: the strict base class and the sections every process
reads (its own server, telemetry, certificates mounted from a platform)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragmeshd import defaults


class Section(BaseModel):
    """A settings section: an unknown key is a typo, refused at start."""

    model_config = ConfigDict(extra="forbid")


class MountedCertificatesSettings(Section):
    """Certificates that an outside issuer writes and renews (cert-manager Secrets mounted as
    directories holding tls.crt, tls.key and ca.crt). Empty: the mesh's own certificates under
    STATE_DIR/certs, as `ragmesh up` makes them."""

    # This server's certificate (its port's TLS) and the client certificate it presents when
    # it calls other services through Envoy.
    server_dir: str = ""
    client_dir: str = ""


class ServerSettings(Section):
    """What every gRPC server process shares."""

    default_deadline_s: float = Field(defaults.DEFAULT_DEADLINE_S, gt=0)
    shutdown_drain_s: float = Field(defaults.SHUTDOWN_DRAIN_S, ge=0)
    shutdown_grace_s: float = Field(defaults.SHUTDOWN_GRACE_S, ge=0)
    max_message_bytes: int = Field(defaults.MAX_MESSAGE_BYTES, ge=1024)
    # Load shedding (issue 9): calls in progress at once (streams included, health checks
    # not); the next is refused at once with RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = Field(defaults.MAX_CONCURRENT_RPCS, ge=1)
    # Every RPC but health checks needs an API key (STATE_DIR/keys). Turning this off
    # is for a server on a private loopback port only.
    require_api_key: bool = True
    # --- Kubernetes (issue 14) ---
    # A second, plaintext port that serves grpc.health.v1 only (no API, no keys): kubelet's
    # gRPC probes speak no TLS. Empty turns it off (`ragmesh up` needs none).
    health_listen: str = ""


class TelemetrySettings(Section):
    """OpenTelemetry traces, exported with OTLP over gRPC."""

    # The collector, e.g. "127.0.0.1:4317" or "http://127.0.0.1:4317" (Jaeger takes OTLP on
    # 4317), reached in plaintext: run it (or an OpenTelemetry Collector that forwards) on
    # this host. Empty means no tracing. When unset here, the standard
    # OTEL_EXPORTER_OTLP_ENDPOINT variable is used.
    otlp_endpoint: str = ""
    # The share of new traces recorded: 1.0 for development, 0.01 suggested for production.
    # Calls that arrive inside a sampled trace are recorded whatever the ratio.
    sampling_ratio: float = Field(defaults.TRACE_SAMPLING_RATIO, ge=0, le=1)
    export_delay_ms: int = Field(defaults.TRACE_EXPORT_DELAY_MS, ge=1)
    export_timeout_s: float = Field(defaults.TRACE_EXPORT_TIMEOUT_S, gt=0)
    max_queue_spans: int = Field(defaults.TRACE_MAX_QUEUE_SPANS, ge=1)

    @field_validator("otlp_endpoint")
    @classmethod
    def _plain_endpoint(cls, value: str) -> str:
        if value.strip():
            parse_otlp_endpoint(value)
        return value.strip()

    @property
    def otlp_address(self) -> tuple[str, int] | None:
        """The collector as (host, port), or None when tracing is off."""
        return parse_otlp_endpoint(self.otlp_endpoint) if self.otlp_endpoint else None


def parse_otlp_endpoint(value: str) -> tuple[str, int]:
    """The collector's (host, port) from `host:port` or `http://host:port`; anything else
    (TLS, a path, no port) is refused."""
    scheme, _, rest = value.strip().rpartition("://")
    if scheme not in ("", "http"):
        raise ValueError(
            f"OTLP endpoint {value!r}: only plaintext collectors (http:// or host:port) are"
            " supported; run the collector, or one that forwards, on this host"
        )
    rest = rest.removesuffix("/")
    host, _, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or "/" in rest or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"OTLP endpoint {value!r} must be host:port, e.g. 127.0.0.1:4317")
    return host, int(port)
