"""Every HTTP surface behind the same gate (issue 23): request bodies over the limit are 413 on
the OpenAI routes and on HTTP/JSON through Envoy's transcoder, before any work; the adapter
admits only Envoy's certificate, so a user's own client certificate dialing it directly is
cut off, with or without a key."""

from __future__ import annotations

import ssl

import httpx
import pytest

from ragmeshd import defaults
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

OVERSIZED = defaults.HTTP_MAX_BODY_BYTES + 1


@pytest.mark.parametrize(
    "path",
    ["/v1/embeddings", "/v1/chat/completions", "/v1/embeddings:embed", "/v1/collections"],
)
def test_an_oversized_body_is_413_on_every_http_route(mesh: Mesh, path: str) -> None:
    body = b'{"input": "' + b"x" * OVERSIZED + b'"}'
    headers = {"authorization": f"Bearer {mesh.api_key}", "content-type": "application/json"}
    with httpx.Client(base_url=mesh.base_url, verify=mesh.ssl_context(), timeout=60) as client:
        answer = client.post(path, content=body, headers=headers)
    assert answer.status_code == 413, (answer.status_code, answer.text[:200])


def test_the_adapter_admits_only_envoy(mesh: Mesh) -> None:
    """The user's certificate is from the mesh CA too; before, it reached the adapter directly
    (GET /v1/models answered 200 with a key), bypassing Envoy's checks."""
    context = mesh.ssl_context()
    context.check_hostname = False
    adapter = f"https://{mesh.env['RAGMESH_OPENAI__LISTEN']}"
    headers = {"authorization": f"Bearer {mesh.api_key}"}
    with (
        httpx.Client(base_url=adapter, verify=context, timeout=30) as client,
        pytest.raises((httpx.TransportError, ssl.SSLError)),
    ):
        client.get("/v1/models", headers=headers)
