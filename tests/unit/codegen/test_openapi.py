"""docs/api/openapi.json from the protos (ragmeshd/codegen/openapi.py): valid OpenAPI 3.1, every
RPC's HTTP route with proto3-JSON schemas, error responses and security schemes. That the
committed file is current is tests/unit/repository/test_protos.py's staleness check."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from openapi_spec_validator import OpenAPIV31SpecValidator

from ragmeshd.codegen import openapi
from ragmeshd.envoy.security import KEYLESS_PATHS
from ragmeshd.envoy.topology import OPENAI_PATHS
from ragmeshd.openai_compat.apidocs import OPENAPI_PATH
from tests.helpers import REPO_ROOT
from tests.unit.repository.test_protos import buf

COMMITTED = REPO_ROOT / "docs" / "api" / "openapi.json"
Document = dict[str, Any]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[descriptor_pb2.FileDescriptorProto]:
    """Every proto in protos/ now, with source info (the comments)."""
    image = tmp_path_factory.mktemp("openapi") / "image.binpb"
    result = buf("build", "-o", str(image))
    assert result.returncode == 0, result.stderr
    return list(descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes()).file)


def _generate(files: list[descriptor_pb2.FileDescriptorProto]) -> Document:
    request = plugin_pb2.CodeGeneratorRequest(
        proto_file=files, file_to_generate=[f.name for f in files if f.name.startswith("ragmesh/")]
    )
    ((name, text),) = openapi.generate(request)
    assert name == "openapi.json"
    return dict(json.loads(text))


@pytest.fixture(scope="module")
def document(files: list[descriptor_pb2.FileDescriptorProto]) -> Document:
    return _generate(files)


def _schema(document: Document, name: str) -> Document:
    return dict(document["components"]["schemas"][name])


def test_the_committed_and_the_served_description_are_valid_openapi_3_1() -> None:
    committed = json.loads(COMMITTED.read_text())
    OpenAPIV31SpecValidator(committed).validate()  # raises with the first error
    assert committed["openapi"].startswith("3.1.")
    # The adapter serves docs/api/openapi.json itself (a symlink in the package), not a copy.
    assert OPENAPI_PATH.read_bytes() == COMMITTED.read_bytes()


def test_a_fresh_generation_is_valid_too(document: Document) -> None:
    OpenAPIV31SpecValidator(document).validate()


def test_every_rpc_of_every_proto_has_its_route(
    files: list[descriptor_pb2.FileDescriptorProto], document: Document
) -> None:
    operation_ids = []
    for file in files:
        if not file.name.startswith("ragmesh/"):
            continue
        for service in file.service:
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                assert verb, f"{service.name}.{method.name} has no google.api.http"
                operation = document["paths"][getattr(rule, verb)][verb]
                assert operation["operationId"] == f"{service.name}_{method.name}"
                assert operation["tags"] == [service.name]
                grpc_path = f"`/{file.package}.{service.name}/{method.name}`"
                assert grpc_path in operation["description"]
                assert operation["summary"]
    for path_item in document["paths"].values():
        operation_ids += [operation["operationId"] for operation in path_item.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_a_new_proto_gets_routes_without_touching_the_generator(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    """Protos that land later (ingest, llm, ...) are described by the same code."""
    new = descriptor_pb2.FileDescriptorProto(
        name="ragmesh/widgets/v1/widgets_service.proto", package="ragmesh.widgets.v1"
    )
    new.message_type.add(name="PolishRequest").field.add(
        name="widget_id", number=1, json_name="widgetId", type=9, label=1
    )
    new.message_type.add(name="PolishResponse").field.add(
        name="shine_count", number=1, json_name="shineCount", type=3, label=1
    )
    method = new.service.add(name="WidgetService").method.add(
        name="Polish",
        input_type=".ragmesh.widgets.v1.PolishRequest",
        output_type=".ragmesh.widgets.v1.PolishResponse",
    )
    method.options.Extensions[annotations_pb2.http].post = "/v1/widgets/{widget_id}:polish"
    method.options.Extensions[annotations_pb2.http].body = "*"
    document = _generate([*files, new])
    operation = document["paths"]["/v1/widgets/{widget_id}:polish"]["post"]
    assert operation["operationId"] == "WidgetService_Polish"
    assert operation["parameters"][0]["name"] == "widget_id"
    response = _schema(document, "ragmesh.widgets.v1.PolishResponse")
    assert response["properties"]["shineCount"]["type"] == "string"  # int64 in JSON
    OpenAPIV31SpecValidator(document).validate()


def test_schemas_follow_the_proto3_json_mapping(document: Document) -> None:
    stream = _schema(document, "ragmesh.embeddings.v1.EmbedStreamRequest")["properties"]
    assert stream["sequence"]["type"] == "string" and stream["sequence"]["format"] == "int64"
    assert stream["inputs"] == {**stream["inputs"], "type": "array", "items": {"type": "string"}}
    interaction = _schema(document, "ragmesh.coordinator.v1.Interaction")["properties"]
    assert interaction["createTime"]["type"] == "string"
    assert interaction["createTime"]["format"] == "date-time"
    assert "interaction_id" not in interaction and "interactionId" in interaction
    decision = _schema(document, "ragmesh.coordinator.v1.Decision")
    assert decision["type"] == "string" and "DECISION_LOCAL" in decision["enum"]
    assert interaction["decision"]["$ref"].endswith("/ragmesh.coordinator.v1.Decision")
    embedding = _schema(document, "ragmesh.embeddings.v1.Embedding")
    assert embedding["properties"]["values"]["items"]["format"] == "float"
    assert embedding["description"].startswith("Embedding is the vector of one input text")


def test_maps_and_oneofs(document: Document) -> None:
    maps = [
        (name, field)
        for name, schema in document["components"]["schemas"].items()
        for field in schema.get("properties", {}).values()
        if "additionalProperties" in field
    ]
    assert maps, "the search API's metadata is a map"
    metadata_value = _schema(document, "ragmesh.search.v1.MetadataValue")
    assert all("(One of `" in p["description"] for p in metadata_value["properties"].values())


def test_a_path_variable_is_a_parameter_and_not_in_the_body(document: Document) -> None:
    operation = document["paths"]["/v1/interactions/{interaction_id}:feedback"]["post"]
    (parameter,) = operation["parameters"]
    assert parameter["in"] == "path" and parameter["required"] is True
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    # The transcoder refuses a body field that the path also sets.
    assert "interactionId" not in body["properties"] and "rating" in body["properties"]


def test_streams_are_json_arrays(document: Document) -> None:
    operation = document["paths"]["/v1/embeddings:embedStream"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["type"] == "array"
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    assert "JSON array" in operation["description"]


def test_error_responses_come_from_the_status_mapping(document: Document) -> None:
    get_collection = document["paths"]["/v1/collections/{name}"]["get"]["responses"]
    assert "`NOT_FOUND`" in get_collection["404"]["description"]  # named in its comment
    embed = document["paths"]["/v1/embeddings:embed"]["post"]["responses"]
    assert "404" not in embed
    for status in ("400", "401", "429", "500", "503", "504"):
        schema = embed[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/google.rpc.Status"}
    assert "`UNAUTHENTICATED`" in embed["401"]["description"]


def test_security_is_mutual_tls_and_a_bearer_key_except_on_the_documentation(
    document: Document,
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["mutualTLS"]["type"] == "mutualTLS"
    assert schemes["bearerKey"] == {**schemes["bearerKey"], "type": "http", "scheme": "bearer"}
    assert document["security"] == [{"mutualTLS": [], "bearerKey": []}]
    keyless = {
        (path, verb)
        for path, item in document["paths"].items()
        for verb, operation in item.items()
        if "security" in operation
    }
    assert keyless == {("/openapi.json", "get"), ("/docs", "get")}
    assert {path for path, _ in keyless} == {path.rstrip("/") for path in KEYLESS_PATHS}
    for path, _ in keyless:
        assert document["paths"][path]["get"]["security"] == [{"mutualTLS": []}]


def test_the_openai_compatible_routes_are_described(document: Document) -> None:
    for path in OPENAI_PATHS:
        described = path if not path.endswith("/") else path + "{model_id}"
        assert described in document["paths"], path
    chat = document["paths"]["/v1/chat/completions"]["post"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("ragmesh.openai.ChatRequest")
    assert (
        "ragmesh.openai.Error"
        in chat["responses"]["401"]["content"]["application/json"]["schema"]["$ref"]
    )


def test_summaries_are_the_comments_first_sentence(document: Document) -> None:
    augment = document["paths"]["/v1/queries:augment"]["post"]["summary"]
    assert augment.startswith("AugmentQuery retrieves the context") and "NOT_FOUND" not in augment
    export = document["paths"]["/v1/interactions:export"]["post"]["summary"]
    assert "(e.g. to build a fine-tuning set)" in export
    assert document["paths"]["/v1/embeddings:embed"]["post"]["summary"] == (
        "Embed returns one embedding per input text, in the order of the inputs"
    )


def test_an_http_body_field_is_the_raw_request_body(document: Document) -> None:
    """UploadFiles: `body: "chunk"`, a google.api.HttpBody, is the file's own bytes, and the
    request's other fields are query parameters."""
    upload = document["paths"]["/v1/collections/{collection}/files"]["post"]
    assert upload["requestBody"]["content"] == {
        "*/*": {"schema": {"type": "string", "format": "binary"}}
    }
    where = {parameter["name"]: parameter["in"] for parameter in upload["parameters"]}
    assert where == {"collection": "path", "file_name": "query", "acl": "query"}
    # The gRPC message still refers to HttpBody, which is described too (from its own proto).
    http_body = _schema(document, "google.api.HttpBody")
    assert {"contentType", "data"} <= set(http_body["properties"])
