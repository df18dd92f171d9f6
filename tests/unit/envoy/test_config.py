"""Rendering Envoy's configuration (ragmeshd/envoy/config.py), without running Envoy."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from ragmeshd.envoy.config import render_config
from ragmeshd.envoy.limits import LEAF_RETRY_ON, TRANSPORT_RETRY_ON
from ragmeshd.envoy.topology import OTLP_CLUSTER, Topology, UpstreamCluster
from ragmeshd.pki.certs import CertificatePaths, ensure_certificates
from ragmeshd.settings import Settings

EMBEDDINGS = "ragmesh.embeddings.v1.EmbeddingsService"
SEARCH = "ragmesh.search.v1.SearchService"
EMBED = f"/{EMBEDDINGS}/Embed"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    return ensure_certificates(tmp_path_factory.mktemp("unit") / "certs")


def topology(certs: CertificatePaths, **changes: Any) -> Topology:
    values: dict[str, Any] = {
        "clusters": [
            UpstreamCluster("embeddings", EMBEDDINGS, [("127.0.0.1", 50051)], [EMBED]),
            UpstreamCluster("search", SEARCH, [("localhost", 50052), ("localhost", 50062)]),
        ],
        "certificates": certs,
    }
    values.update(changes)
    return Topology(**values)


def rendered(certs: CertificatePaths, **changes: Any) -> dict[str, Any]:
    config = yaml.safe_load(render_config(topology(certs, **changes)))
    assert isinstance(config, dict)
    return config


def routes(config: dict[str, Any], listener: str) -> list[dict[str, Any]]:
    (found,) = [x for x in config["static_resources"]["listeners"] if x["name"] == listener]
    manager = found["filter_chains"][0]["filters"][0]["typed_config"]
    result: list[dict[str, Any]] = manager["route_config"]["virtual_hosts"][0]["routes"]
    return result


def test_routes_put_retried_methods_before_their_service(certs: CertificatePaths) -> None:
    config = rendered(certs)
    for listener in ("client", "internal"):
        table = [
            (r["match"].get("path") or r["match"]["prefix"], r["route"])
            for r in routes(config, listener)
        ]
        assert [match for match, _ in table] == [
            EMBED,
            f"/{EMBEDDINGS}/EmbedStream",
            f"/{EMBEDDINGS}/",
            f"/{SEARCH}/",
            "/grpc.reflection.v1alpha.ServerReflection/",
            "/grpc.reflection.v1.ServerReflection/",
        ]
        assert [route["cluster"] for _, route in table] == [
            "embeddings", "embeddings", "embeddings", "search", "embeddings", "embeddings",
        ]  # fmt: skip
        retried = [match for match, route in table if "retry_policy" in route]
        assert retried == [EMBED]
        policy = table[0][1]["retry_policy"]
        assert policy["retry_on"] == LEAF_RETRY_ON
        assert "resource-exhausted" not in policy["retry_on"]
        assert policy["num_retries"] == 2
        assert policy["retry_host_predicate"][0]["name"] == (
            "envoy.retry_host_predicates.previous_hosts"
        )
        deadlines = {
            match: (route["timeout"], route["max_stream_duration"]) for match, route in table
        }
        # Unary calls: 30 s without a caller's deadline, a caller's deadline up to the cap.
        assert deadlines[EMBED] == (
            "0s",
            {"max_stream_duration": "30s", "grpc_timeout_header_max": "60s"},
        )
        assert deadlines[f"/{SEARCH}/"] == (
            "0s",
            {"max_stream_duration": "30s", "grpc_timeout_header_max": "120s"},
        )
        # A stream is capped as a whole.
        assert deadlines[f"/{EMBEDDINGS}/EmbedStream"] == (
            "0s",
            {"max_stream_duration": "600s", "grpc_timeout_header_max": "600s"},
        )
        assert not any("grpc.health" in match for match, _ in table)


def test_listeners_require_client_certificates(certs: CertificatePaths) -> None:
    config = rendered(certs)
    listeners = {x["name"]: x for x in config["static_resources"]["listeners"]}
    assert listeners["client"]["address"]["socket_address"]["address"] == "0.0.0.0"
    assert listeners["internal"]["address"]["socket_address"]["address"] == "127.0.0.1"
    for listener in listeners.values():
        tls = listener["filter_chains"][0]["transport_socket"]["typed_config"]
        assert tls["require_client_certificate"] is True
        validation = tls["common_tls_context"]["validation_context"]
        assert validation["trusted_ca"]["filename"] == str(certs.ca)
    internal_tls = listeners["internal"]["filter_chains"][0]["transport_socket"]["typed_config"]
    matchers = internal_tls["common_tls_context"]["validation_context"][
        "match_typed_subject_alt_names"
    ]
    assert matchers == [
        {"san_type": "URI", "matcher": {"prefix": "spiffe://ragmesh.internal/service/"}}
    ]


def test_clusters_speak_mtls_http2_with_health_checks(certs: CertificatePaths) -> None:
    clusters = {c["name"]: c for c in rendered(certs)["static_resources"]["clusters"]}
    assert clusters["embeddings"]["type"] == "STATIC"
    assert clusters["search"]["type"] == "STRICT_DNS"
    search = clusters["search"]
    options = search["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in options["explicit_http_config"]
    tls = search["transport_socket"]["typed_config"]
    assert tls["sni"] == "search.ragmesh.internal"
    assert tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"] == (
        str(certs.envoy_upstream.cert)
    )
    assert search["health_checks"][0]["grpc_health_check"]["service_name"] == SEARCH
    assert len(search["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 2
    outlier = search["outlier_detection"]
    assert outlier["consecutive_gateway_failure"] == 2
    assert outlier["enforcing_consecutive_gateway_failure"] == 100
    assert outlier["base_ejection_time"] == "30s"
    assert outlier["max_ejection_percent"] == 50


def test_unix_socket_endpoints(certs: CertificatePaths, tmp_path: Path) -> None:
    cluster = UpstreamCluster("embeddings", EMBEDDINGS, [(f"unix:{tmp_path}/e.sock", 0)])
    config = rendered(certs, clusters=[cluster])
    (rendered_cluster,) = config["static_resources"]["clusters"]
    endpoint = rendered_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["address"] == {"pipe": {"path": f"{tmp_path}/e.sock"}}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"admin": ("0.0.0.0", 9901)}, "admin address must be loopback"),
        ({"internal_listener": ("10.0.0.1", 8444)}, "internal listener address must be loopback"),
        ({"client_listener": ("localhost", 8443)}, "must be an IP address"),
        ({"admin": ("127.0.0.1", 8443)}, "ports must differ"),
        ({"clusters": []}, "at least one cluster"),
        ({"clusters": [UpstreamCluster("Embeddings", EMBEDDINGS, [("::1", 1)])]}, "snake_case"),
        ({"clusters": [UpstreamCluster("e", "NoPackage", [("::1", 1)])]}, "full gRPC service"),
        ({"clusters": [UpstreamCluster("e", EMBEDDINGS, [])]}, "no endpoints"),
        (
            {"clusters": [UpstreamCluster("e", EMBEDDINGS, [("::1", 1)], ["/other.S/Embed"])]},
            "must be /ragmesh",
        ),
    ],
)
def test_unsafe_or_malformed_topologies_are_refused(
    certs: CertificatePaths, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        render_config(topology(certs, **changes))


def managers(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        listener["filter_chains"][0]["filters"][0]["typed_config"]
        for listener in config["static_resources"]["listeners"]
    ]


def test_tracing_only_with_a_collector(certs: CertificatePaths) -> None:
    plain = rendered(certs)
    assert all("tracing" not in manager for manager in managers(plain))
    assert OTLP_CLUSTER not in [c["name"] for c in plain["static_resources"]["clusters"]]

    config = rendered(certs, otlp_endpoint=("127.0.0.1", 4317), trace_sampling_ratio=0.01)
    for manager in managers(config):
        tracing = manager["tracing"]
        assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
        otel = tracing["provider"]["typed_config"]
        assert otel["@type"] == "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
        assert otel["grpc_service"]["envoy_grpc"]["cluster_name"] == OTLP_CLUSTER
        assert otel["service_name"] == "ragmesh-envoy"
        assert tracing["random_sampling"] == {"value": 1.0}
    (collector,) = [c for c in config["static_resources"]["clusters"] if c["name"] == OTLP_CLUSTER]
    options = collector["typed_extension_protocol_options"]
    http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in http["explicit_http_config"]
    assert "transport_socket" not in collector  # plaintext, to this host
    address = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 4317}


def test_a_service_cluster_may_not_take_the_collectors_name(certs: CertificatePaths) -> None:
    clusters = [UpstreamCluster(OTLP_CLUSTER, EMBEDDINGS, [("127.0.0.1", 50051)])]
    with pytest.raises(ValueError, match="reserved"):
        render_config(topology(certs, clusters=clusters, otlp_endpoint=("127.0.0.1", 4317)))


def test_search_and_coordinator_are_not_retried_on_their_dependencies_failures(
    certs: CertificatePaths,
) -> None:
    """Only the leaf (embeddings) is retried on UNAVAILABLE: search's UNAVAILABLE means its
    dependency failed after Envoy already retried that hop."""
    search = UpstreamCluster("search", SEARCH, [("127.0.0.1", 50052)], [f"/{SEARCH}/Search"])
    config = rendered(certs, clusters=[search])
    (route, *_) = routes(config, "client")
    assert route["route"]["retry_policy"]["retry_on"] == TRANSPORT_RETRY_ON
    assert "unavailable" not in TRANSPORT_RETRY_ON


def test_clusters_have_a_retry_budget_and_breakers_scaled_by_replicas(
    certs: CertificatePaths,
) -> None:
    clusters = {c["name"]: c for c in rendered(certs)["static_resources"]["clusters"]}
    embeddings = clusters["embeddings"]["circuit_breakers"]["thresholds"][0]
    search = clusters["search"]["circuit_breakers"]["thresholds"][0]
    assert embeddings["retry_budget"] == {
        "budget_percent": {"value": 20.0},
        "min_retry_concurrency": 10,
    }
    assert "max_retries" not in embeddings  # the budget replaces the fixed cap
    assert search["max_requests"] == 2 * embeddings["max_requests"]  # two replicas vs one
    assert clusters["search"]["per_connection_buffer_limit_bytes"] == 1024 * 1024


def test_a_clusters_own_request_cap_replaces_the_service_default_and_is_runtime_tunable(
    certs: CertificatePaths,
) -> None:
    capped = UpstreamCluster(
        "embeddings",
        EMBEDDINGS,
        [("127.0.0.1", 50051), ("127.0.0.1", 50061)],
        max_requests_per_replica=64,
    )
    config = rendered(certs, clusters=[capped])
    (cluster,) = config["static_resources"]["clusters"]
    assert cluster["circuit_breakers"]["thresholds"][0]["max_requests"] == 2 * 64
    # An admin layer, so /runtime_modify can move circuit_breakers.<cluster>.default.* live.
    assert config["layered_runtime"] == {"layers": [{"name": "admin", "admin_layer": {}}]}
    with pytest.raises(ValueError, match="max_requests_per_replica"):
        render_config(topology(certs, clusters=[replace(capped, max_requests_per_replica=0)]))


def test_listeners_bound_headers_idle_streams_and_buffers(certs: CertificatePaths) -> None:
    config = rendered(certs)
    for listener in config["static_resources"]["listeners"]:
        assert listener["per_connection_buffer_limit_bytes"] == 1024 * 1024
    for manager in managers(config):
        assert manager["request_headers_timeout"] == "10s"
        assert manager["stream_idle_timeout"] == "60s"
        assert manager["common_http_protocol_options"] == {"idle_timeout": "3600s"}


def test_an_embed_stuck_on_a_frozen_replica_is_retried_within_searchs_callers_deadline(
    certs: CertificatePaths,
) -> None:
    """The embeddings hop's per-try timeout plus one retry's backoff fits inside the deadline
    the coordinator gives search, so a query reaches a live replica before that deadline."""
    embeddings = UpstreamCluster("embeddings", EMBEDDINGS, [("127.0.0.1", 50051)], [EMBED])
    search = UpstreamCluster("search", SEARCH, [("127.0.0.1", 50052)], [f"/{SEARCH}/Search"])
    config = rendered(certs, clusters=[embeddings, search])
    per_try = {
        route["route"]["cluster"]: float(route["route"]["retry_policy"]["per_try_timeout"][:-1])
        for route in routes(config, "client")
        if "retry_policy" in route.get("route", {})
    }
    backoff_max = float(
        routes(config, "client")[0]["route"]["retry_policy"]["retry_back_off"]["max_interval"][:-1]
    )
    assert per_try["embeddings"] + backoff_max < Settings().coordinator.search_timeout_s / 1.5
    assert per_try["embeddings"] < per_try["search"] <= Settings().coordinator.search_timeout_s
