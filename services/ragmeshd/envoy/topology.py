"""What Envoy is rendered for: the mesh's topology (listeners, the gRPC services' clusters, the
HTTP adapter and gateway), validated before anything is written."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ragmeshd import defaults
from ragmeshd.envoy.security import KEYLESS_PATHS, RATELIMIT_CLUSTER
from ragmeshd.envoy.yaml_templates import is_ip
from ragmeshd.identities import service_dns_name
from ragmeshd.state import CertificatePaths

# Listeners and admin.
# The client listener is the mesh's one public entrance (mTLS + API key), on every interface
# by design; everything else is on loopback.
CLIENT_LISTEN = ("0.0.0.0", 8443)  # nosec B104

INTERNAL_LISTEN = ("127.0.0.1", 8444)

ADMIN_LISTEN = ("127.0.0.1", 9901)

OTLP_CLUSTER = "otlp_collector"

# HTTP/JSON on the client listener (see HttpGateway): the descriptor set `make generate` builds
# for the transcoder (gen/descriptors, through the symlink that also ships it in the wheel),
# and the largest JSON answer (the gRPC message limit, with room for JSON's longer spelling of
# numbers). Request bodies are capped far lower: defaults.HTTP_MAX_BODY_BYTES.
DESCRIPTOR_SET = Path(__file__).resolve().parent / "descriptors" / "ragmesh.binpb"
HTTP_JSON_MAX_RESPONSE_BYTES = 64 * 1024 * 1024

# The paths the OpenAI-compatible adapter answers (exact, or a prefix ending in "/").
OPENAI_PATHS = ("/v1/embeddings", "/v1/models", "/v1/models/", "/v1/chat/completions")

HTTP_HEALTH_PATH = "/healthz"

Address = tuple[str, int]

_CLUSTER_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


_GRPC_SERVICE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


_METHOD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvoyConfigError(Exception):
    """Envoy rejected a configuration; the message carries Envoy's own output."""


@dataclass(frozen=True)
class UpstreamCluster:
    """One ragmesh service and its replicas.

    `name` is snake_case (Envoy's cluster and stats name); the replicas' server certificates
    must carry `<name with dashes>.ragmesh.internal`. `endpoints` are (host, port) pairs: IP
    literals, host names (resolved by DNS), or ("unix:/path", 0) for a unix socket.
    `retry_methods` are full paths ("/pkg.Service/Method") safe to send twice.
    `max_requests_per_replica` replaces the service's circuit breaker default
    (ragmeshd/envoy/limits.py): calls in flight per replica, past which Envoy refuses.
    """

    name: str
    grpc_service: str
    endpoints: Sequence[Address]
    retry_methods: Sequence[str] = ()
    max_requests_per_replica: int | None = None

    @property
    def server_name(self) -> str:
        return service_dns_name(self.name.replace("_", "-"))

    def validate(self) -> None:
        if not _CLUSTER_NAME.match(self.name):
            raise ValueError(f"cluster name {self.name!r} must be snake_case")
        if not _GRPC_SERVICE.match(self.grpc_service):
            raise ValueError(f"{self.grpc_service!r} is not a full gRPC service name")
        if not self.endpoints:
            raise ValueError(f"cluster {self.name} has no endpoints")
        if self.max_requests_per_replica is not None and self.max_requests_per_replica < 1:
            raise ValueError(f"cluster {self.name}: max_requests_per_replica must be >= 1")
        for host, port in self.endpoints:
            if not host.startswith("unix:") and not 0 < port < 65536:
                raise ValueError(f"cluster {self.name}: bad port {port} for {host}")
        prefix = f"/{self.grpc_service}/"
        for method in self.retry_methods:
            if not method.startswith(prefix) or not _METHOD.match(method.removeprefix(prefix)):
                raise ValueError(
                    f"retry method {method!r} of cluster {self.name} must be {prefix}<Method>"
                )


@dataclass(frozen=True)
class HttpUpstream:
    """An HTTP/1.1 service behind Envoy (the OpenAI-compatible adapter): `paths` on the client
    listener go to its `endpoints`, over mTLS like the gRPC clusters (its server certificate
    carries `<name with dashes>.ragmesh.internal`). `keyless_paths` are the routes it serves
    without a key check (for GET: the API's description and Swagger UI), a subset of
    security.KEYLESS_PATHS."""

    name: str
    endpoints: Sequence[Address]
    paths: Sequence[str] = OPENAI_PATHS
    keyless_paths: Sequence[str] = KEYLESS_PATHS
    health_path: str = HTTP_HEALTH_PATH

    @property
    def server_name(self) -> str:
        return service_dns_name(self.name.replace("_", "-"))


@dataclass(frozen=True)
class HttpGateway:
    """HTTP/JSON on the client listener: every RPC of `services` through the gRPC-JSON
    transcoder (paths from the google.api.http annotations in `descriptor_set`), and the
    `adapters`' paths routed to them. Both keep the listener's mTLS, and the API key is sent
    as the usual `authorization` header."""

    services: Sequence[str]
    descriptor_set: Path = DESCRIPTOR_SET
    adapters: Sequence[HttpUpstream] = ()


@dataclass(frozen=True)
class Topology:
    """Everything Envoy's configuration depends on."""

    clusters: Sequence[UpstreamCluster]
    certificates: CertificatePaths
    client_listener: Address = CLIENT_LISTEN
    internal_listener: Address = INTERNAL_LISTEN
    admin: Address = ADMIN_LISTEN
    access_log: bool = True
    # Envoy's own refusals as audit records, appended to this file (envoy/refusal_log.py);
    # None: only in the access log above.
    refusal_log: Path | None = None
    # The OTLP/gRPC collector (host, port) for Envoy's trace spans; None: no tracing.
    otlp_endpoint: Address | None = None
    # The rate-limit service's unix socket (`ragmesh serve ratelimit`); None: no key limits.
    ratelimit_socket: Path | None = None
    # Or its (host, port) over mutual TLS, health-checked like a service (Kubernetes: one
    # rate-limit pod that every Envoy pod asks, so a key's limit holds across them all).
    ratelimit_endpoint: Address | None = None
    # Limited keys' calls go on when the rate-limit service cannot answer (default: refused).
    ratelimit_fail_open: bool = False
    # How long Envoy waits for the rate-limit service's decision (ratelimit.timeout_s).
    ratelimit_timeout_s: float = defaults.RATELIMIT_TIMEOUT_S
    # Envoy's admin on this unix socket (0600), `admin` then serving only its read-only pages
    # (ragmeshd/envoy/security.py); None: admin itself on `admin` (loopback).
    admin_socket: Path | None = None
    # The share of calls without a caller's trace context that start a trace.
    trace_sampling_ratio: float = 1.0
    # HTTP/JSON and HTTP adapters on the client listener; None: gRPC only.
    http_gateway: HttpGateway | None = None
    # Issue 14: Envoy's certificates through SDS files under this directory, re-read when the
    # certificate files are renewed (ragmeshd/envoy/sds.py); None: plain file names.
    sds_dir: Path | None = None
    # Kubernetes: the services call the internal listener from other pods, so it listens on
    # the pod's address (its SAN matcher still admits service identities only).
    internal_listener_remote: bool = False

    def validate(self) -> None:
        if not self.clusters:
            raise ValueError("a topology needs at least one cluster")
        names = [cluster.name for cluster in self.clusters]
        if len(set(names)) != len(names):
            raise ValueError(f"cluster names must be unique: {names}")
        if self.otlp_endpoint is not None:
            if OTLP_CLUSTER in names:
                raise ValueError(f"cluster name {OTLP_CLUSTER} is reserved for the collector")
            host, port = self.otlp_endpoint
            if host.startswith("unix:") or not host or not 0 < port < 65536:
                raise ValueError(f"bad OTLP collector address {host}:{port}")
        if not 0 <= self.trace_sampling_ratio <= 1:
            raise ValueError("trace_sampling_ratio must be between 0 and 1")
        if self.ratelimit_timeout_s <= 0:
            raise ValueError("ratelimit_timeout_s must be above 0")
        if self.ratelimit_socket is not None and self.ratelimit_endpoint is not None:
            raise ValueError("the rate-limit service is a unix socket or an endpoint, not both")
        if RATELIMIT_CLUSTER in names:
            raise ValueError(f"cluster name {RATELIMIT_CLUSTER} is reserved for rate limits")
        services = [cluster.grpc_service for cluster in self.clusters]
        if len(set(services)) != len(services):
            raise ValueError(f"each gRPC service may belong to one cluster only: {services}")
        for cluster in self.clusters:
            cluster.validate()
        # Envoy binds IP literals only. Admin can reconfigure and stop Envoy, and the internal
        # listener is for the services on this host: neither may be reachable from elsewhere.
        for what, (host, _port) in (
            ("client listener", self.client_listener),
            ("internal listener", self.internal_listener),
            ("admin", self.admin),
        ):
            if not is_ip(host):
                raise ValueError(f"the {what} address must be an IP address, not {host!r}")
            remote_ok = what == "client listener" or (
                what == "internal listener" and self.internal_listener_remote
            )
            if not remote_ok and not ipaddress.ip_address(host).is_loopback:
                raise ValueError(f"the {what} address must be loopback, not {host}")
        if self.http_gateway is not None:
            validate_gateway(self.http_gateway, names)
        ports = [self.client_listener[1], self.internal_listener[1], self.admin[1]]
        if len(set(ports)) != len(ports):
            raise ValueError(f"listener and admin ports must differ: {ports}")


def validate_gateway(gateway: HttpGateway, cluster_names: Sequence[str]) -> None:
    if not gateway.descriptor_set.is_file():
        raise ValueError(f"descriptor set {gateway.descriptor_set} is missing: run `make generate`")
    for service in gateway.services:
        if not _GRPC_SERVICE.match(service):
            raise ValueError(f"{service!r} is not a full gRPC service name")
    for adapter in gateway.adapters:
        if not _CLUSTER_NAME.match(adapter.name) or adapter.name in cluster_names:
            raise ValueError(f"HTTP adapter name {adapter.name!r} must be a new snake_case name")
        if not adapter.endpoints or not adapter.paths:
            raise ValueError(f"HTTP adapter {adapter.name} needs endpoints and paths")
        for path in adapter.paths:
            if not path.startswith("/"):
                raise ValueError(f"HTTP adapter {adapter.name}: path {path!r} must start with /")
        extra = set(adapter.keyless_paths) - set(KEYLESS_PATHS)
        if extra:
            raise ValueError(f"HTTP adapter {adapter.name}: only {KEYLESS_PATHS} may skip the key")
