"""HTTP/JSON on the client listener: the transcoder, the adapter's routes and cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ragmeshd.envoy.config import envoy_binary, render_config, write_config
from ragmeshd.envoy.topology import (
    DESCRIPTOR_SET,
    HttpGateway,
    HttpUpstream,
    Topology,
    UpstreamCluster,
)
from ragmeshd.pki.certs import CertificatePaths, ensure_certificates

EMBEDDINGS = "ragmesh.embeddings.v1.EmbeddingsService"
SEARCH = "ragmesh.search.v1.SearchService"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    return ensure_certificates(tmp_path_factory.mktemp("gateway") / "certs")


def topology(certs: CertificatePaths, gateway: HttpGateway | None) -> Topology:
    return Topology(
        clusters=[
            UpstreamCluster("embeddings", EMBEDDINGS, [("127.0.0.1", 50051)]),
            UpstreamCluster("search", SEARCH, [("127.0.0.1", 50052)]),
        ],
        certificates=certs,
        http_gateway=gateway,
    )


def gateway(**changes: Any) -> HttpGateway:
    values: dict[str, Any] = {
        "services": [EMBEDDINGS, SEARCH],
        "adapters": [HttpUpstream("openai", [("127.0.0.1", 50054)])],
    }
    values.update(changes)
    return HttpGateway(**values)


def listener(config: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [x for x in config["static_resources"]["listeners"] if x["name"] == name]
    return dict(found)


def manager(config: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(listener(config, name)["filter_chains"][0]["filters"][0]["typed_config"])


def test_without_a_gateway_the_listeners_speak_grpc_only(certs: CertificatePaths) -> None:
    config = yaml.safe_load(render_config(topology(certs, None)))
    client = manager(config, "client")
    assert client["codec_type"] == "HTTP2"
    assert [f["name"] for f in gateway_filters(client)] == ["envoy.filters.http.router"]


def test_the_client_listener_transcodes_and_routes_the_adapter(certs: CertificatePaths) -> None:
    config = yaml.safe_load(render_config(topology(certs, gateway())))
    client = manager(config, "client")
    assert client["codec_type"] == "AUTO"
    tls = listener(config, "client")["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["common_tls_context"]["alpn_protocols"] == ["h2", "http/1.1"]
    assert tls["require_client_certificate"] is True
    transcoder, router = gateway_filters(client)
    assert transcoder["name"] == "envoy.filters.http.grpc_json_transcoder"
    assert router["name"] == "envoy.filters.http.router"
    settings = transcoder["typed_config"]
    assert settings["proto_descriptor"] == str(DESCRIPTOR_SET)
    assert settings["services"] == [EMBEDDINGS, SEARCH]
    assert settings["convert_grpc_status"] is True
    routes = client["route_config"]["virtual_hosts"][0]["routes"]
    adapter = [r["match"] for r in routes if r["route"]["cluster"] == "openai"]
    get = [{"name": ":method", "string_match": {"exact": "GET"}}]
    assert adapter == [
        # The key-less documentation routes first (tests/unit/envoy/test_keyless_routes.py).
        {"path": "/openapi.json", "headers": get},
        {"path": "/docs", "headers": get},
        {"prefix": "/docs/", "headers": get},
        {"path": "/v1/embeddings"},
        {"path": "/v1/models"},
        {"prefix": "/v1/models/"},
        {"path": "/v1/chat/completions"},
    ]
    # The adapter's routes come before the gRPC ones, which stay as they were.
    assert routes[0]["route"]["cluster"] == "openai"
    # The internal listener is untouched: gRPC over HTTP/2 between services only.
    internal = manager(config, "internal")
    assert internal["codec_type"] == "HTTP2" and len(gateway_filters(internal)) == 1
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "openai"]
    upstream_tls = cluster["transport_socket"]["typed_config"]
    assert upstream_tls["sni"] == "openai.ragmesh.internal"
    assert cluster["health_checks"][0]["http_health_check"]["path"] == "/healthz"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"descriptor_set": Path("/nonexistent.binpb")}, "make generate"),
        ({"services": ["NotQualified"]}, "full gRPC service name"),
        ({"adapters": [HttpUpstream("search", [("127.0.0.1", 1)])]}, "new snake_case name"),
        ({"adapters": [HttpUpstream("openai", [])]}, "needs endpoints"),
        ({"adapters": [HttpUpstream("openai", [("127.0.0.1", 1)], ["v1"])]}, "must start with /"),
    ],
)
def test_bad_gateways_are_refused(
    certs: CertificatePaths, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        render_config(topology(certs, gateway(**changes)))


def test_the_gateway_passes_envoy_validate_without_warnings(
    certs: CertificatePaths, tmp_path: Path
) -> None:
    path = write_config(topology(certs, gateway()), tmp_path / "envoy.yaml")
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "deprecated" not in output.lower() and "[warning]" not in output


def gateway_filters(manager: dict) -> list[dict]:
    """The HTTP filters but the key-id and rate-limit filters (ragmeshd/envoy/security.py)."""
    security = ("envoy.filters.http.lua", "envoy.filters.http.ratelimit")
    return [f for f in manager["http_filters"] if f["name"] not in security]
