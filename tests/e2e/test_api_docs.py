"""The API's description and Swagger UI through Envoy (issue 20): GET /openapi.json and /docs
need the client certificate but no key, and are the only routes that need none; in a real
browser (headless chromium with the mesh's client certificate) the page lists every route,
and "Try it out" on Embed, with the key typed into Authorize, answers 200.

Screenshots of the page, the Authorize dialog and that call are kept in .ragmesh/artifacts/e2e/
(docs-page.png, docs-authorize.png, docs-try-it-out.png)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.browser import chromium
from tests.helpers import REPO_ROOT
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO_ROOT / ".ragmesh" / "artifacts" / "e2e"
COMMITTED = REPO_ROOT / "docs" / "api" / "openapi.json"
# How long the page may take to appear, or a call from it to answer (a wait, not a check).
PAGE_WAIT_S = 60


@pytest.fixture(scope="module")
def keyless(mesh: Mesh) -> Iterator[httpx.Client]:
    """An HTTP client with the client certificate and no API key."""
    with httpx.Client(base_url=mesh.base_url, verify=mesh.ssl_context(), timeout=60) as client:
        yield client


def test_the_description_and_the_page_need_no_key(keyless: httpx.Client) -> None:
    spec = keyless.get("/openapi.json")
    assert spec.status_code == 200, spec.text
    assert spec.content == COMMITTED.read_bytes()
    page = keyless.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert keyless.get("/docs/swagger-ui-bundle.js").status_code == 200


# Bodies the OpenAI adapter reads before it calls the mesh (other routes get `{}`).
VALID_BODIES = {
    "/v1/embeddings": {"input": "x", "model": "all-MiniLM-L6-v2"},
    "/v1/chat/completions": {
        "model": "ragmesh-rag",
        "messages": [{"role": "user", "content": "x"}],
    },
}


def test_every_other_route_still_needs_the_key(keyless: httpx.Client) -> None:
    spec = json.loads(COMMITTED.read_text())
    for path, item in spec["paths"].items():
        for verb, operation in item.items():
            if "security" in operation:  # the two documentation routes
                continue
            concrete = path.replace("{", "x").replace("}", "")
            body = VALID_BODIES.get(path, {}) if verb == "post" else None
            schema = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if schema and schema["schema"].get("type") == "array":  # a client stream
                body = [body]
            response = keyless.request(verb, concrete, json=body)
            assert response.status_code == 401, (verb, path, response.text)
    # The key-less routes are GET only.
    assert keyless.post("/openapi.json", json={}).status_code != 200


def test_no_client_certificate_no_description(mesh: Mesh) -> None:
    context = ssl.create_default_context(cafile=str(mesh.certs / "ca.pem"))
    with (
        httpx.Client(base_url=mesh.base_url, verify=context, timeout=30) as client,
        pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)),
    ):
        client.get("/openapi.json")


def _wait(driver: WebDriver, css: str) -> WebElement:
    """The first element matching `css`, once the page has it."""
    found: WebElement = WebDriverWait(driver, PAGE_WAIT_S).until(
        ready.presence_of_element_located((By.CSS_SELECTOR, css))
    )
    return found


def _listed_routes(driver: WebDriver) -> set[tuple[str, str]]:
    _wait(driver, ".opblock")
    found = set()
    for block in driver.find_elements(By.CSS_SELECTOR, ".opblock"):
        method = block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text.lower()
        path = block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute(
            "data-path"
        )
        found.add((method, str(path)))
    return found


def _authorize(driver: WebDriver, key: str) -> None:
    driver.find_element(By.CSS_SELECTOR, "button.authorize").click()
    field = _wait(driver, ".modal-ux input[aria-label='auth-bearer-value']")
    field.send_keys(key)
    driver.save_screenshot(str(ARTIFACTS / "docs-authorize.png"))
    driver.find_element(By.CSS_SELECTOR, ".modal-ux button.modal-btn.authorize").click()
    driver.find_element(By.CSS_SELECTOR, ".modal-ux button.btn-done").click()


def _try_embed(driver: WebDriver) -> str:
    """Open Embed, "Try it out" with one input, Execute; the live response's status."""
    block = "#operations-EmbeddingsService-EmbeddingsService_Embed"
    driver.find_element(By.CSS_SELECTOR, f"{block} .opblock-summary").click()
    _wait(driver, f"{block} button.try-out__btn").click()
    body = _wait(driver, f"{block} textarea.body-param__text")
    body.clear()
    body.send_keys('{"inputs": ["typed into Swagger UI"]}')
    driver.find_element(By.CSS_SELECTOR, f"{block} button.execute").click()
    status = _wait(driver, f"{block} .live-responses-table tr.response .response-col_status")
    # The screenshot shows the call: its body, the curl line and the live response.
    driver.execute_script(
        "arguments[0].scrollIntoView();", driver.find_element(By.CSS_SELECTOR, block)
    )
    return str(status.text).split()[0]


def test_swagger_ui_in_chromium_lists_every_route_and_tries_embed(
    mesh: Mesh, tmp_path: Path
) -> None:
    spec = json.loads(COMMITTED.read_text())
    expected = {(verb, path) for path, item in spec["paths"].items() for verb in item}
    certs = mesh.certs
    with chromium(
        mesh.base_url,
        certs / "ca.pem",
        certs / "clients" / "client.pem",
        certs / "clients" / "client-key.pem",
        tmp_path,
    ) as driver:
        driver.get(f"{mesh.base_url}/docs")
        assert _listed_routes(driver) == expected
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "docs-page.png"))
        _authorize(driver, mesh.api_key)
        status = _try_embed(driver)
        driver.save_screenshot(str(ARTIFACTS / "docs-try-it-out.png"))
        curl = driver.find_element(By.CSS_SELECTOR, ".curl-command").text
        assert status == "200", driver.get_log("browser")
        assert "Authorization: Bearer" in curl
        result = driver.find_element(
            By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_description pre"
        ).get_attribute("textContent")
        assert len(json.loads(str(result))["embeddings"][0]["values"]) == 384
