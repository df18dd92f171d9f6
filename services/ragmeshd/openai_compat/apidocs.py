"""The API's description and its interactive page, static files served by the adapter:

    GET /openapi.json   docs/api/openapi.json (generated from the protos by `make generate`)
    GET /docs           Swagger UI on it; its assets under /docs/

With the adapter's health check, the only routes that need no API key: Envoy routes exactly
these paths here for GET without a key check (ragmeshd/envoy/security.py, KEYLESS_PATHS),
still over mutual TLS. Swagger UI's files come from the swagger-ui-bundle-v2 package,
installed with the mesh: the page loads nothing from anywhere but the mesh itself, and its
"Try it out" calls go to the same origin with the key typed into its Authorize dialog.
"""

from __future__ import annotations

import functools
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route
from swagger_ui_bundle import swagger_ui_path

# docs/api through a symlink (like the Envoy templates), so the wheel ships the file.
OPENAPI_PATH = Path(__file__).resolve().parent / "api" / "openapi.json"
SWAGGER_UI_DIR = Path(str(swagger_ui_path))
# The Swagger UI files the page loads, and their media types; nothing else is served.
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
INIT_SCRIPT = "ragmesh-docs.js"
# Same-origin only: no script, style, font or call goes anywhere but the mesh (Swagger UI's
# online validator badge is off too), and no other site may frame the page.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'"
    " 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self';"
    " base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}

PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>ragmesh API</title>
    <link rel="stylesheet" href="/docs/swagger-ui.css">
    <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
    <link rel="icon" type="image/png" href="/docs/favicon-16x16.png" sizes="16x16">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/swagger-ui-bundle.js"></script>
    <script src="/docs/ragmesh-docs.js"></script>
  </body>
</html>
"""
# Swagger UI's options: https://swagger.io/docs/open-source-tools/swagger-ui/usage/configuration/
SCRIPT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false,
    displayRequestDuration: true,
  });
};
"""


@functools.cache
def _openapi() -> bytes:
    return OPENAPI_PATH.read_bytes()


async def _spec(_request: Request) -> Response:
    return Response(_openapi(), media_type="application/json", headers=SECURITY_HEADERS)


async def _page(_request: Request) -> Response:
    return HTMLResponse(PAGE, headers=SECURITY_HEADERS)


async def _asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name == INIT_SCRIPT:
        return Response(
            SCRIPT, media_type="text/javascript; charset=utf-8", headers=SECURITY_HEADERS
        )
    if name not in ASSETS:
        return Response("not found\n", status_code=404, media_type="text/plain")
    return FileResponse(SWAGGER_UI_DIR / name, media_type=ASSETS[name], headers=SECURITY_HEADERS)


def routes() -> list[Route]:
    """GET /openapi.json, /docs and /docs/<asset> (HEAD too, as Starlette adds it)."""
    return [
        Route("/openapi.json", _spec, methods=["GET"]),
        Route("/docs", _page, methods=["GET"]),
        Route("/docs/{name}", _asset, methods=["GET"]),
    ]
