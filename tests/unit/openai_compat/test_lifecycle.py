"""The OpenAI adapter's process life: a renewed certificate served without a restart, and the
drain before it stops (no server process; real TLS handshakes on loopback)."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from pathlib import Path

import uvicorn
from cryptography import x509
from starlette.applications import Starlette
from starlette.requests import Request

from ragmeshd.openai_compat.lifecycle import DrainingServer, Health, reload_certificate
from ragmeshd.pki import certs


def _served_serial(context: ssl.SSLContext, ca: Path) -> int:
    """Handshake with a server using `context`; the serial of the certificate it presents."""

    async def handshake() -> int:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        client = ssl.create_default_context(cafile=str(ca))
        client.check_hostname = False
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        server.close()
        return x509.load_der_x509_certificate(der).serial_number

    return asyncio.run(handshake())


def test_a_renewed_certificate_is_served_to_new_connections(tmp_path: Path) -> None:
    paths = certs.ensure_certificates(tmp_path / "certs")
    served = paths.services["openai"]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(served.cert), str(served.key))
    before = x509.load_pem_x509_certificate(served.cert.read_bytes()).serial_number
    assert _served_serial(context, paths.ca) == before

    async def renew_while_watching() -> None:
        watcher = asyncio.create_task(
            reload_certificate(context, served.cert, served.key, paths.ca, interval_s=0.01)
        )
        await asyncio.sleep(0.05)
        # Renewal as the kubelet or `ragmesh certs renew` does it: new files moved into place.
        renewed = certs.ensure_certificates(tmp_path / "renewed").services["openai"]
        for source, target in ((renewed.key, served.key), (renewed.cert, served.cert)):
            shutil.copy(source, target.with_suffix(".new"))
            os.replace(target.with_suffix(".new"), target)
        await asyncio.sleep(0.2)
        watcher.cancel()

    asyncio.run(renew_while_watching())
    after = x509.load_pem_x509_certificate(served.cert.read_bytes()).serial_number
    assert after != before
    # The renewed pair is from another CA here; the client only reads the serial.
    renewed_ca = tmp_path / "renewed" / "ca.pem"
    assert _served_serial(context, renewed_ca) == after


def test_the_first_stop_signal_drains_before_stopping() -> None:
    health = Health()
    server = DrainingServer(uvicorn.Config(Starlette()), health, drain_s=0.2)

    async def ready() -> int:
        return (await health.readiness(Request({"type": "http"}))).status_code

    assert asyncio.run(ready()) == 200
    server.handle_exit(15, None)
    assert not server.should_exit and asyncio.run(ready()) == 503
    asyncio.run(asyncio.sleep(0.25))
    assert asyncio.run(server.on_tick(0)) is True  # the main loop's next tick stops it
    # A second signal stops at once.
    other = DrainingServer(uvicorn.Config(Starlette()), Health(), drain_s=30)
    other.handle_exit(15, None)
    other.handle_exit(15, None)
    assert other.should_exit
