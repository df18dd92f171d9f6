"""Property-based fuzzing of the HTTP side through Envoy (issue 23): every route of the
OpenAPI description (HTTP/JSON for every RPC, the OpenAI-compatible routes, the docs) with
random JSON or raw bytes as bodies, random path parameters and query strings, random
credential headers, and keys of fewer scopes, several calls at once. Nothing a client sends
may be answered 500 (or 502, or a dropped connection): Envoy's own 503 shedding is fine.
Afterwards the mesh is healthy. RAGMESH_FUZZ_HTTP_EXAMPLES cases (60 in `make test`, far more
in `make fuzz`); fixed seed.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragmeshd.envoy.admin import clusters_healthy
from tests.helpers import REPO_ROOT, ragmesh_command
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("RAGMESH_FUZZ_HTTP_EXAMPLES", "60"))
CONCURRENT = 4
# Answers that mean the mesh failed on what it was sent (503 is Envoy shedding load).
FORBIDDEN = {500, 501, 502, 504}
OPENAPI = json.loads((REPO_ROOT / "docs" / "api" / "openapi.json").read_text())
ROUTES = sorted(
    (method.upper(), path) for path, operations in OPENAPI["paths"].items() for method in operations
)
SEEN: collections.Counter[str] = collections.Counter()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Bodies: JSON objects with the routes' own field names mixed in, arbitrary JSON, raw bytes.
field_names = st.sampled_from(
    [
        "inputs",
        "input",
        "query",
        "collections",
        "documents",
        "messages",
        "model",
        "name",
        "stream",
        "top_k",
        "mode",
        "filter",
        "id",
        "text",
        "max_tokens",
        "temperature",
    ]
)
bodies = st.one_of(
    st.dictionaries(field_names, json_values, max_size=5).map(json.dumps),
    json_values.map(json.dumps),
    st.binary(max_size=200).map(lambda raw: raw.decode("latin-1")),
)
path_params = st.one_of(
    st.text(alphabet="abcdefghij-_0123456789", min_size=1, max_size=12),
    st.text(max_size=12).map(lambda text: quote(text, safe="") or "x"),
)


def credential_headers(admin: str, embed_only: str) -> st.SearchStrategy[list[tuple[str, str]]]:
    valid = st.sampled_from([[("authorization", f"Bearer {admin}")], [("x-api-key", embed_only)]])
    odd = st.lists(
        st.tuples(
            st.sampled_from(["authorization", "x-api-key", "content-type", "x-request-id"]),
            # Printable values without edge whitespace: what an HTTP client library will send.
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(
                str.strip
            ),
        ),
        max_size=3,
    )
    return st.one_of(valid, odd, st.tuples(valid, odd).map(lambda pair: pair[0] + pair[1]))


def make_key(mesh: Mesh, name: str, scopes: str) -> str:
    created = subprocess.run(
        ragmesh_command("keys", "create", name, "--scopes", scopes),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **mesh.env},
        timeout=60,
        check=True,
    )
    return created.stdout.strip()


def fill(path: str, values: list[str]) -> str:
    parts, index = [], 0
    for segment in path.split("/"):
        if segment.startswith("{") and "}" in segment:
            parts.append(values[index % len(values)] + segment[segment.index("}") + 1 :])
            index += 1
        else:
            parts.append(segment)
    return "/".join(parts)


async def send(client: httpx.AsyncClient, case: dict[str, Any]) -> int:
    try:
        answer = await client.request(
            case["method"],
            case["path"],
            content=case["body"].encode("utf-8", "surrogatepass")
            if case["method"] != "GET"
            else None,
            headers=httpx.Headers(case["headers"] + [("content-type", "application/json")]),
            timeout=30,
        )
    except httpx.RemoteProtocolError:
        return -1  # a dropped connection is a server failure too
    return answer.status_code


def test_http_routes_never_answer_500_whatever_they_are_sent(mesh: Mesh) -> None:
    embed_only = make_key(mesh, "fuzz-http-embed", "embed")
    cases = st.fixed_dictionaries(
        {
            "route": st.sampled_from(ROUTES),
            "params": st.lists(path_params, min_size=1, max_size=2),
            "body": bodies,
            "headers": credential_headers(mesh.api_key, embed_only),
        }
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(cases, min_size=1, max_size=CONCURRENT))
    def several_at_once(batch: list[dict[str, Any]]) -> None:
        requests = [
            {
                "method": case["route"][0],
                "path": fill(case["route"][1], case["params"]),
                "body": case["body"],
                "headers": case["headers"],
            }
            for case in batch
        ]

        async def run() -> list[int]:
            async with httpx.AsyncClient(base_url=mesh.base_url, verify=mesh.ssl_context()) as c:
                return await asyncio.gather(*(send(c, request) for request in requests))

        codes = asyncio.run(run())
        for request, code in zip(requests, codes, strict=True):
            SEEN[f"{request['method']} {code}"] += 1
            assert code not in FORBIDDEN and code != -1, (code, request)

    several_at_once()
    print(f"HTTP fuzz answers: {dict(SEEN)}")
    clusters = sorted({replica.service for replica in mesh.state.replicas})
    assert asyncio.run(clusters_healthy(mesh.admin, clusters))
