"""docs/api/ from the protos' comments (ragmeshd/codegen/apidoc.py): complete and linked."""

from __future__ import annotations

import re

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from ragmeshd.codegen import apidoc
from tests.unit.repository.test_protos import buf


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    image = tmp_path_factory.mktemp("apidoc") / "image.binpb"
    result = buf("build", "-o", str(image))  # with source info: the comments
    assert result.returncode == 0, result.stderr
    files = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes()).file
    request = plugin_pb2.CodeGeneratorRequest(
        proto_file=files, file_to_generate=[f.name for f in files if f.name.startswith("ragmesh/")]
    )
    return dict(apidoc.generate(request))


def test_every_service_rpc_message_field_and_enum_is_documented(pages: dict[str, str]) -> None:
    from ragmeshd.runtime.api import API_FILES

    assert set(pages) == {"README.md", "embeddings.md", "search.md", "coordinator.md", "llm.md"}
    for file in API_FILES:
        page = pages[f"{file.package.split('.')[1]}.md"]
        for service in file.services_by_name.values():
            assert f"## {service.name}" in page
            for method in service.methods:
                assert f"{service.name}.{method.name}" in page
                assert f"`/{service.full_name}/{method.name}`" in page
        for message in file.message_types_by_name.values():
            assert f'<a id="{apidoc._anchor(message.full_name)}"></a>' in page
            for field in message.fields:
                row = next(
                    line for line in page.splitlines() if line.startswith(f"| `{field.name}` ")
                )
                assert row.rstrip(" |").split("|")[-1].strip(), f"{message.name}.{field.name}"
        for enum in file.enum_types_by_name.values():
            for value in enum.values:
                assert f"| `{value.name}` | {value.number} |" in page


def test_http_mappings_and_status_codes(pages: dict[str, str]) -> None:
    search = pages["search.md"]
    assert "`POST /v1/collections/{collection}:search` (body: `*`)" in search
    assert "`ALREADY_EXISTS` (409)" in search
    assert "| `UNAUTHENTICATED` | 401 |" in pages["README.md"]
    assert "the response is a JSON array of messages" in pages["coordinator.md"]


def test_every_link_points_at_an_anchor(pages: dict[str, str]) -> None:
    anchors = {
        name: set(re.findall(r'<a id="([^"]+)"></a>', text)) | {"status-codes"}
        for name, text in pages.items()
    }
    for name, text in pages.items():
        for page, anchor in re.findall(r"\]\(([a-z]*\.md)?#([a-z0-9-]+)\)", text):
            assert anchor in anchors[page or name], (name, page, anchor)
