"""Envoy's upstream clusters: one per gRPC service (mutual TLS, HTTP/2, gRPC health checks,
outlier ejection, breakers scaled by replicas) and one for the HTTP adapter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ragmeshd.envoy import limits as envoy_limits
from ragmeshd.envoy.limits import (
    BASE_EJECTION_TIME_S,
    CONNECT_TIMEOUT_S,
    CONSECUTIVE_5XX,
    CONSECUTIVE_GATEWAY_FAILURE,
    HEALTH_CHECK_INTERVAL_S,
    HEALTH_CHECK_NO_TRAFFIC_INTERVAL_S,
    HEALTH_CHECK_TIMEOUT_S,
    HEALTHY_THRESHOLD,
    KEEPALIVE_INTERVAL_S,
    KEEPALIVE_TIMEOUT_S,
    MAX_EJECTION_PERCENT,
    OUTLIER_ENFORCING_PERCENT,
    OUTLIER_INTERVAL_S,
    UNHEALTHY_THRESHOLD,
)
from ragmeshd.envoy.topology import OTLP_CLUSTER, Address, HttpUpstream, UpstreamCluster
from ragmeshd.envoy.yaml_templates import duration, is_ip, render
from ragmeshd.state import CertificatePaths


def grpc_cluster(cluster: UpstreamCluster, certs: CertificatePaths) -> Any:
    limits = envoy_limits.limits_for(cluster.name)
    replicas = len(cluster.endpoints)
    return render(
        "cluster.yaml",
        name=cluster.name,
        discovery_type=_discovery_type(cluster.endpoints),
        connect_timeout=duration(CONNECT_TIMEOUT_S),
        lb_endpoints=[
            {"endpoint": {"address": address(host, port)}} for host, port in cluster.endpoints
        ],
        keepalive_interval=duration(KEEPALIVE_INTERVAL_S),
        keepalive_timeout=duration(KEEPALIVE_TIMEOUT_S),
        server_name=cluster.server_name,
        client_cert=str(certs.envoy_upstream.cert),
        client_key=str(certs.envoy_upstream.key),
        ca=str(certs.ca),
        health_timeout=duration(HEALTH_CHECK_TIMEOUT_S),
        health_interval=duration(HEALTH_CHECK_INTERVAL_S),
        health_no_traffic_interval=duration(HEALTH_CHECK_NO_TRAFFIC_INTERVAL_S),
        unhealthy_threshold=UNHEALTHY_THRESHOLD,
        healthy_threshold=HEALTHY_THRESHOLD,
        grpc_service=cluster.grpc_service,
        consecutive_gateway_failure=CONSECUTIVE_GATEWAY_FAILURE,
        consecutive_5xx=CONSECUTIVE_5XX,
        enforcing_percent=OUTLIER_ENFORCING_PERCENT,
        outlier_interval=duration(OUTLIER_INTERVAL_S),
        base_ejection_time=duration(BASE_EJECTION_TIME_S),
        max_ejection_percent=MAX_EJECTION_PERCENT,
        buffer_limit_bytes=envoy_limits.PER_CONNECTION_BUFFER_LIMIT_BYTES,
        max_connections=limits.max_connections_per_replica * replicas,
        max_pending_requests=limits.max_pending_requests_per_replica * replicas,
        max_requests=(cluster.max_requests_per_replica or limits.max_requests_per_replica)
        * replicas,
        retry_budget_percent=envoy_limits.RETRY_BUDGET_PERCENT,
        min_retry_concurrency=envoy_limits.MIN_RETRY_CONCURRENCY,
    )


def http_cluster(adapter: HttpUpstream, certs: CertificatePaths) -> Any:
    limits = envoy_limits.DEFAULT_LIMITS
    replicas = len(adapter.endpoints)
    return render(
        "http_cluster.yaml",
        name=adapter.name,
        discovery_type=_discovery_type(adapter.endpoints),
        connect_timeout=duration(CONNECT_TIMEOUT_S),
        lb_endpoints=[
            {"endpoint": {"address": address(host, port)}} for host, port in adapter.endpoints
        ],
        server_name=adapter.server_name,
        client_cert=str(certs.envoy_upstream.cert),
        client_key=str(certs.envoy_upstream.key),
        ca=str(certs.ca),
        health_path=adapter.health_path,
        health_timeout=duration(HEALTH_CHECK_TIMEOUT_S),
        health_interval=duration(HEALTH_CHECK_INTERVAL_S),
        health_no_traffic_interval=duration(HEALTH_CHECK_NO_TRAFFIC_INTERVAL_S),
        unhealthy_threshold=UNHEALTHY_THRESHOLD,
        healthy_threshold=HEALTHY_THRESHOLD,
        consecutive_gateway_failure=CONSECUTIVE_GATEWAY_FAILURE,
        enforcing_percent=OUTLIER_ENFORCING_PERCENT,
        outlier_interval=duration(OUTLIER_INTERVAL_S),
        base_ejection_time=duration(BASE_EJECTION_TIME_S),
        max_ejection_percent=MAX_EJECTION_PERCENT,
        max_connections=limits.max_connections_per_replica * replicas,
        max_pending_requests=limits.max_pending_requests_per_replica * replicas,
        max_requests=limits.max_requests_per_replica * replicas,
        # HTTP adapters' routes have no retry policy.
        max_retries=0,
    )


def _discovery_type(endpoints: Sequence[Address]) -> str:
    # STATIC takes IP literals and unix sockets; host names need DNS.
    if all(host.startswith("unix:") or is_ip(host) for host, _ in endpoints):
        return "STATIC"
    if any(host.startswith("unix:") for host, _ in endpoints):
        raise ValueError("a cluster cannot mix unix sockets with DNS names")
    return "STRICT_DNS"


def address(host: str, port: int) -> dict[str, Any]:
    if host.startswith("unix:"):
        return {"pipe": {"path": host.removeprefix("unix:")}}
    return {"socket_address": {"address": host, "port_value": port}}


def otlp_cluster(endpoint: Address) -> Any:
    host, port = endpoint
    return render(
        "otlp_cluster.yaml",
        name=OTLP_CLUSTER,
        discovery_type=_discovery_type([endpoint]),
        connect_timeout=duration(CONNECT_TIMEOUT_S),
        address=address(host, port),
    )
