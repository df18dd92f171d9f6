"""GET /openapi.json and /docs are the client listener's only routes without a key check
(ragmeshd/envoy/security.py): to the HTTP adapter, GET only, the rate-limit filter off."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from ragmeshd.envoy.config import render_config, validate_config, write_config
from ragmeshd.envoy.security import KEYLESS_PATHS, RATELIMIT_FILTER, keyless_route
from ragmeshd.envoy.topology import HttpUpstream
from ragmeshd.pki.certs import CertificatePaths, ensure_certificates
from tests.unit.envoy.test_http_gateway import gateway, manager, topology


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    return ensure_certificates(tmp_path_factory.mktemp("keyless") / "certs")


def _client_routes(certs: CertificatePaths, tmp_path: Path) -> list[dict[str, Any]]:
    with_limits = replace(topology(certs, gateway()), ratelimit_socket=tmp_path / "rl.sock")
    config = yaml.safe_load(render_config(with_limits))
    client = manager(config, "client")
    assert RATELIMIT_FILTER in [f["name"] for f in client["http_filters"]]
    assert client["route_config"]["virtual_hosts"][0]["rate_limits"]
    return list(client["route_config"]["virtual_hosts"][0]["routes"])


def test_only_the_documentation_routes_skip_the_rate_limit_check(
    certs: CertificatePaths, tmp_path: Path
) -> None:
    routes = _client_routes(certs, tmp_path)
    keyless = [route for route in routes if "typed_per_filter_config" in route]
    matched = [route["match"].get("path") or route["match"]["prefix"] for route in keyless]
    assert matched == list(KEYLESS_PATHS) == ["/openapi.json", "/docs", "/docs/"]
    for route in keyless:
        assert route["route"]["cluster"] == "openai"
        assert route["match"]["headers"] == [{"name": ":method", "string_match": {"exact": "GET"}}]
        assert route["typed_per_filter_config"] == {
            RATELIMIT_FILTER: {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "disabled": True,
            }
        }
    # They come first, before any other route could take their paths.
    assert routes[: len(keyless)] == keyless


def test_no_other_path_can_be_made_keyless(certs: CertificatePaths) -> None:
    with pytest.raises(ValueError, match="not one of the key-less paths"):
        keyless_route("/v1/embeddings", {})
    adapter = HttpUpstream("openai", [("127.0.0.1", 1)], keyless_paths=["/v1/models"])
    with pytest.raises(ValueError, match="may skip the key"):
        render_config(topology(certs, gateway(adapters=[adapter])))


def test_keyless_routes_pass_envoy_validate_with_and_without_rate_limits(
    certs: CertificatePaths, tmp_path: Path
) -> None:
    plain = topology(certs, gateway())
    limited = replace(plain, ratelimit_socket=tmp_path / "rl.sock")
    for name, each in (("plain", plain), ("limited", limited)):
        validate_config(write_config(each, tmp_path / f"{name}.yaml"))
