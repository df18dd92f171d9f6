"""GET /openapi.json and Swagger UI at /docs from the adapter (ragmeshd/openai_compat/apidocs.py):
the committed description, the packaged Swagger UI's files, nothing from anywhere else."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from ragmeshd.openai_compat import apidocs
from tests.helpers import REPO_ROOT


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(Starlette(routes=apidocs.routes())) as test_client:
        yield test_client


def test_openapi_json_is_the_committed_description(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    committed = (REPO_ROOT / "docs" / "api" / "openapi.json").read_bytes()
    assert response.content == committed
    assert json.loads(response.content)["openapi"].startswith("3.1")


def test_the_page_loads_only_the_meshs_own_files(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    loaded = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert loaded and all(url.startswith("/docs/") for url in loaded)
    for url in loaded:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["x-content-type-options"] == "nosniff"
    script = client.get(f"/docs/{apidocs.INIT_SCRIPT}").text
    # The description from this origin; no call to Swagger's online validator.
    assert 'url: "/openapi.json"' in script and "validatorUrl: null" in script
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy


def test_the_assets_are_swagger_ui_5_from_its_package(client: TestClient) -> None:
    bundle = client.get("/docs/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert bundle.content == (apidocs.SWAGGER_UI_DIR / "swagger-ui-bundle.js").read_bytes()
    assert "swagger-ui-5." in str(apidocs.SWAGGER_UI_DIR)  # 5.x reads OpenAPI 3.1


@pytest.mark.parametrize(
    "path", ["/docs/index.html", "/docs/..%2Fopenapi.json", "/docs/swagger-ui.js.map", "/docs/x"]
)
def test_nothing_else_is_served(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_only_get_and_head(client: TestClient) -> None:
    assert client.head("/openapi.json").status_code == 200
    assert client.post("/openapi.json").status_code == 405
    assert client.put("/docs").status_code == 405
