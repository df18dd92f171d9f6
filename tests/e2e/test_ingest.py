"""Documents in through the whole mesh (issue 21): `ragmesh ingest` of a generated folder
through Envoy with mutual TLS, `ragmesh search` finding passages by text, page and section,
a second run sending nothing, a changed and a deleted file with --prune, `ragmesh documents`,
ListDocuments over HTTP/JSON, and a search.read key refused the writes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import REPO_ROOT, ragmesh_command
from tests.mesh import Mesh
from tests.unit.documents.conftest import write_docx, write_pdf, write_scanned_pdf

pytestmark = pytest.mark.e2e

# On the suite's shared mesh (tests/conftest.py): a collection no other test uses.
COLLECTION = "ingest-notes"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("my-docs")
    (root / "guides").mkdir()
    (root / "guides" / "kayak.md").write_text(
        "# Kayak guide\n\n## Launching\n\nSit in the kayak while it floats in shallow water,"
        " then push off with the paddle.\n\n## Capsizing\n\nLean forward, pull the spray"
        " skirt loop and slide out of the cockpit.\n"
    )
    (root / "guides" / "stove.rst").write_text(
        "Stove manual\n============\n\nPriming\n-------\n\nPump the fuel bottle twenty"
        " times before lighting the white gas stove.\n"
    )
    (root / "page.html").write_text(
        "<html><head><title>Camp</title></head><body><nav>Home | Shop | Cart</nav><main>"
        "<h1>Campsites</h1><h2>Water</h2><p>Filter stream water through a ceramic filter"
        " before drinking.</p></main><footer>cookie banner</footer></body></html>"
    )
    (root / "todo.txt").write_text("Buy waterproof matches and a spare headlamp battery.")
    write_pdf(
        root / "avalanche.pdf",
        [
            "Avalanche danger rises after heavy snowfall and strong wind.",
            "Every member of the party carries a beacon, a probe and a shovel.",
        ],
        headings=["Danger", "Equipment"],
        title="Avalanche basics",
    )
    write_docx(root / "manual.docx")
    write_scanned_pdf(root / "scan.pdf", root.parent / "scan.png")
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8)
    (root / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    return root


def cli(mesh: Mesh, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ragmesh_command("--state-dir", str(mesh.state_dir), *args),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **mesh.env},
        timeout=500,
        check=False,
    )
    if check:
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def cli_json(mesh: Mesh, *args: str) -> Any:
    return json.loads(cli(mesh, *args, "--json").stdout)


def search(mesh: Mesh, query: str, *extra: str) -> list[dict[str, Any]]:
    found = cli_json(mesh, "search", query, "--collection", COLLECTION, *extra)
    hits: list[dict[str, Any]] = found["hits"]
    return hits


def test_ingest_then_search_by_text_page_and_section(mesh: Mesh, folder: Path) -> None:
    report = cli_json(mesh, "ingest", str(folder), "--collection", COLLECTION)
    assert report["collection_created"]
    assert report["ingested"] == 6, report
    assert sorted(Path(i).name for i in report["added"]) == [
        "avalanche.pdf", "kayak.md", "manual.docx", "page.html", "stove.rst", "todo.txt",
    ]  # fmt: skip
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert reasons == {
        "scan.pdf": "no text layer",
        "broken.pdf": "unreadable",
        "photo.txt": "binary",
    }
    assert report["passages"] >= 6

    pdf = search(mesh, "who carries a beacon probe and shovel", "--top-k", "3")[0]
    assert pdf["source"].endswith("/avalanche.pdf")
    assert (pdf["title"], pdf["page"], pdf["section"]) == ("Avalanche basics", 2, "Equipment")
    kayak = search(mesh, "pull the spray skirt loop to slide out of the cockpit")[0]
    assert kayak["source"].endswith("/guides/kayak.md")
    assert (kayak["title"], kayak["section"]) == ("Kayak guide", "Capsizing")
    stove = search(mesh, "pump the fuel bottle", "--mode", "keyword")[0]
    assert (stove["title"], stove["section"]) == ("Stove manual", "Priming")
    html = search(mesh, "ceramic filter for stream water")[0]
    assert (html["title"], html["section"]) == ("Campsites", "Water")
    assert "cookie" not in html["text"] and "Shop" not in html["text"]
    plain = cli(mesh, "search", "spare headlamp battery", "--collection", COLLECTION).stdout
    assert "todo.txt" in plain.splitlines()[0]


def test_a_second_run_sends_nothing_and_prune_follows_changes(mesh: Mesh, folder: Path) -> None:
    again = cli_json(mesh, "ingest", str(folder), "--collection", COLLECTION)
    assert again["upsert_calls"] == 0 and again["ingested"] == 0
    assert again["unchanged"] == 6

    (folder / "todo.txt").write_text("Buy a topographic map of the glacier.")
    (folder / "guides" / "stove.rst").unlink()
    kept = cli_json(mesh, "ingest", str(folder), "--collection", COLLECTION)
    assert [Path(i).name for i in kept["changed"]] == ["todo.txt"] and kept["pruned"] == []
    pruned = cli_json(mesh, "ingest", str(folder), "--collection", COLLECTION, "--prune")
    assert [Path(i).name for i in pruned["pruned"]] == ["stove.rst"]
    assert pruned["upsert_calls"] == 0

    listed = cli_json(mesh, "documents", "list", "--collection", COLLECTION)["documents"]
    assert sorted(Path(d["source"]).name for d in listed) == [
        "avalanche.pdf", "kayak.md", "manual.docx", "page.html", "todo.txt",
    ]  # fmt: skip
    pdf = next(d for d in listed if d["source"].endswith("avalanche.pdf"))
    assert pdf["passages"] == 2 and len(pdf["content_hash"]) == 64 and pdf["modified"]
    hits = search(mesh, "topographic map of the glacier", "--mode", "keyword")
    assert hits[0]["source"].endswith("/todo.txt")
    assert all(not hit["source"].endswith("stove.rst") for hit in search(mesh, "fuel bottle"))


def test_documents_over_http_and_delete_by_source(mesh: Mesh, folder: Path) -> None:
    headers = {"authorization": f"Bearer {mesh.api_key}"}
    with httpx.Client(
        base_url=mesh.base_url, verify=mesh.ssl_context(), headers=headers, timeout=60
    ) as http:
        response = http.get(f"/v1/collections/{COLLECTION}/documents", params={"page_size": 2})
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["documents"]) == 2 and page["nextPageToken"]
        assert {"id", "source", "contentHash", "passageCount"} <= set(page["documents"][0])
    prefix = page["documents"][0]["source"].rsplit("/", 1)[0] + "/guides/"
    deleted = cli_json(mesh, "documents", "delete", "--collection", COLLECTION, "--source", prefix)
    assert deleted == {"deleted": 1}  # guides/kayak.md (stove.rst was pruned)


def test_a_search_read_key_may_search_but_not_write(mesh: Mesh, folder: Path) -> None:
    created = cli(mesh, "keys", "create", "reader", "--scopes", "search.read")
    key_file = mesh.state_dir / "reader.key"
    key_file.write_text(created.stdout.strip())
    key_file.chmod(0o600)
    time.sleep(1.5)  # servers re-read the key store within a second
    (folder / "new.md").write_text("# New\n\nA note written after the first ingest.")
    try:
        refused = cli(
            mesh, "ingest", str(folder), "--collection", COLLECTION,
            "--api-key-file", str(key_file), check=False,
        )  # fmt: skip
        assert refused.returncode == 1, refused.stderr
        assert "PERMISSION_DENIED" in refused.stderr
        found = cli(
            mesh, "search", "beacon", "--collection", COLLECTION, "--api-key-file", str(key_file)
        )
        assert "avalanche.pdf" in found.stdout
    finally:
        (folder / "new.md").unlink()


def test_upload_over_http_through_envoy(mesh: Mesh) -> None:
    headers = {"authorization": f"Bearer {mesh.api_key}"}
    with httpx.Client(
        base_url=mesh.base_url, verify=mesh.ssl_context(), headers=headers, timeout=120
    ) as http:
        response = http.post(
            f"/v1/collections/{COLLECTION}/files",
            params={"file_name": "uploads/hut.md"},
            content=b"# Hut guide\n\n## Booking\n\nBook the mountain hut two weeks ahead.\n",
            headers={"content-type": "text/markdown"},
        )
        assert response.status_code == 200, response.text
        stored = response.json()
        assert stored["files"][0]["id"] == "uploads/hut.md"
        assert stored["files"][0]["title"] == "Hut guide"
        bad = http.post(
            f"/v1/collections/{COLLECTION}/files",
            params={"file_name": "uploads/photo.png"},
            content=b"\x89PNG\r\n\x1a\n" + bytes(256),
            headers={"content-type": "image/png"},
        )
        assert bad.status_code == 400, bad.text
        assert "uploads/photo.png" in bad.text
    hit = search(mesh, "when to book the mountain hut")[0]
    assert (hit["source"], hit["section"]) == ("uploads/hut.md", "Booking")


async def test_a_search_read_key_gets_permission_denied_on_upload(mesh: Mesh) -> None:
    import grpc
    from google.api.httpbody_pb2 import HttpBody

    from ragmesh.search.v1 import search_service_pb2 as pb
    from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
    from ragmeshd.runtime.channels import metadata_interceptors

    key = cli(mesh, "keys", "create", "upload-reader", "--scopes", "search.read").stdout.strip()
    await asyncio.sleep(1.5)  # servers re-read the key store within a second
    request = pb.UploadFilesRequest(
        collection=COLLECTION, file_name="denied.md", chunk=HttpBody(data=b"# No\n\ntext")
    )
    async with grpc.aio.secure_channel(
        mesh.endpoint, mesh.client_credentials(), interceptors=metadata_interceptors(key)
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await pb_grpc.SearchServiceStub(channel).UploadFiles(iter([request]), timeout=60)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_upload_larger_than_an_http_json_body_streams_through(
    mesh: Mesh, tmp_path: Path
) -> None:
    """A 2+ MiB file (a PDF with a photo and one line of text): over Envoy's limit for JSON
    bodies, within upload_max_bytes."""
    import random

    from fpdf import FPDF
    from PIL import Image

    noise = random.Random(3).randbytes(900 * 900 * 3)
    Image.frombytes("RGB", (900, 900), noise).save(tmp_path / "photo.png")
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=11)
    pdf.multi_cell(0, 5, "The summit photo was taken at dawn from the north ridge.")
    pdf.image(str(tmp_path / "photo.png"), x=10, y=30, w=150)
    pdf.output(str(tmp_path / "summit.pdf"))
    data = (tmp_path / "summit.pdf").read_bytes()
    assert len(data) > 2 * 1024 * 1024
    headers = {"authorization": f"Bearer {mesh.api_key}"}
    with httpx.Client(
        base_url=mesh.base_url, verify=mesh.ssl_context(), headers=headers, timeout=120
    ) as http:
        response = http.post(
            f"/v1/collections/{COLLECTION}/files",
            params={"file_name": "uploads/summit.pdf"},
            content=data,
            headers={"content-type": "application/pdf"},
        )
    assert response.status_code == 200, response.text[:500]
    assert response.json()["files"][0]["passageCount"] == 1
