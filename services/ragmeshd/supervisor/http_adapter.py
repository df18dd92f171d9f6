"""What `ragmesh up` needs to run the OpenAI-compatible HTTP adapter: its settings and a
readiness probe over the same mutual TLS that Envoy's health check uses."""

from __future__ import annotations

import ssl

import httpx

from ragmeshd.envoy.topology import HTTP_HEALTH_PATH
from ragmeshd.runtime.tls import replica_server_name
from ragmeshd.settings import Settings
from ragmeshd.state import CertificatePaths

OPENAI = "openai"
PROBE_TIMEOUT_S = 2.0


def adapter_env(settings: Settings) -> dict[str, str]:
    """The adapter calls the services through Envoy's internal listener, with mTLS."""
    internal = settings.mesh.internal_listen
    return {
        "RAGMESH_STATE_DIR": str(settings.state_dir),
        "RAGMESH_MESH__TLS": "true",
        "RAGMESH_OPENAI__LISTEN": settings.openai.listen,
        "RAGMESH_OPENAI__EMBEDDINGS_TARGET": internal,
        "RAGMESH_OPENAI__COORDINATOR_TARGET": internal,
    }


async def https_probe(listen: str, certs: CertificatePaths) -> bool:
    """GET /healthz answers 200, presenting Envoy's upstream certificate as Envoy would."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.load_cert_chain(str(certs.envoy_upstream.cert), str(certs.envoy_upstream.key))
    host, _, port = listen.rpartition(":")
    try:
        async with httpx.AsyncClient(verify=context, timeout=PROBE_TIMEOUT_S) as client:
            # Dial the address, but verify (and send as SNI) the adapter's DNS name, the only
            # name its certificate carries.
            response = await client.get(
                f"https://{host}:{port}{HTTP_HEALTH_PATH}",
                extensions={"sni_hostname": replica_server_name(OPENAI)},
            )
    except httpx.HTTPError:
        return False
    return response.status_code == 200
