"""A protoc plugin (run by `make generate` through buf) that writes docs/api/openapi.json, the
OpenAPI 3.1 description of the mesh's HTTP/JSON API: every RPC's route from its
`google.api.http` annotation, request and response schemas from the messages
(ragmeshd/codegen/openapi_schemas.py), descriptions from the comments, error responses from
the gRPC status mapping, the security schemes (mutual TLS + bearer key), and the
OpenAI-compatible routes and the two key-less documentation routes
(ragmeshd/codegen/openapi_routes.py).

The mesh serves the same file at GET /openapi.json, and Swagger UI on it at GET /docs.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from google.api import annotations_pb2  # registers the google.api.http option
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from ragmeshd.codegen import openapi_routes
from ragmeshd.codegen.apidoc import EVERY_RPC, HTTP_STATUS, Comments, codes_named
from ragmeshd.codegen.openapi_schemas import (
    HTTP_BODY,
    RAW_BODY,
    STATUS_SCHEMA_NAME,
    FieldProto,
    Schema,
    Schemas,
    ref,
)

OUTPUT = "openapi.json"
_SERVICE, _METHOD = 6, 2
_VERBS = ("get", "put", "post", "delete", "patch")
# {name} or {name=pattern} in a path template: OpenAPI keeps the name only.
_VARIABLE = re.compile(r"\{([^}=]+)(=[^}]*)?\}")
_SENTENCE_END = re.compile(r"\.\s(?=[A-Z`])")
_QUERY_TYPES = {FieldProto.TYPE_MESSAGE, FieldProto.TYPE_GROUP}


def document(
    files: list[descriptor_pb2.FileDescriptorProto],
    imported: Sequence[descriptor_pb2.FileDescriptorProto] = (),
) -> dict[str, Any]:
    """The OpenAPI document for the services in `files`; `imported` has the other protos
    they use (e.g. google/api/httpbody.proto)."""
    schemas = Schemas(files, imported)
    paths: dict[str, dict[str, Any]] = {}
    tags = []
    for file in files:
        comments = Comments(file)
        for s_index, service in enumerate(file.service):
            tags.append({"name": service.name, "description": comments.get(_SERVICE, s_index)})
            for m_index, method in enumerate(service.method):
                text = comments.get(_SERVICE, s_index, _METHOD, m_index)
                for verb, path, operation in _operations(file, service, method, text, schemas):
                    paths.setdefault(path, {})[verb] = operation
    openapi_routes.add(paths, tags, schemas.components)
    return {
        "openapi": "3.1.0",
        "info": openapi_routes.INFO,
        "servers": [{"url": "/", "description": "Envoy's client listener (this mesh)"}],
        "security": [{openapi_routes.MUTUAL_TLS: [], openapi_routes.BEARER_KEY: []}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": openapi_routes.SECURITY_SCHEMES,
        },
    }


def _operations(
    file: descriptor_pb2.FileDescriptorProto,
    service: descriptor_pb2.ServiceDescriptorProto,
    method: descriptor_pb2.MethodDescriptorProto,
    text: str,
    schemas: Schemas,
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """One operation per HTTP binding of `method` (its rule and any additional_bindings)."""
    rule = method.options.Extensions[annotations_pb2.http]
    rules = [rule, *rule.additional_bindings]
    for number, binding in enumerate(rules):
        verb = binding.WhichOneof("pattern")
        if verb not in _VERBS:
            continue
        template = getattr(binding, verb)
        bound = [match.group(1) for match in _VARIABLE.finditer(template)]
        path = _VARIABLE.sub(lambda match: "{" + match.group(1) + "}", template)
        operation_id = f"{service.name}_{method.name}" + (f"_{number}" if number else "")
        operation: dict[str, Any] = {
            "tags": [service.name],
            "operationId": operation_id,
            "summary": _first_sentence(text) or method.name,
            "description": text
            + f"\n\ngRPC: `/{file.package}.{service.name}/{method.name}`"
            + _streaming_note(method),
            "parameters": _parameters(method, binding.body, bound, schemas),
            "responses": _responses(method, text, schemas),
        }
        if binding.body:
            operation["requestBody"] = _request_body(method, binding.body, bound, schemas)
        if not operation["parameters"]:
            del operation["parameters"]
        yield verb, path, operation


def _first_sentence(text: str) -> str:
    """The comment's first sentence (a full stop before a capital: not "e.g. to")."""
    flat = " ".join(text.split())
    end = _SENTENCE_END.search(flat)
    return flat[: end.start()] if end else flat.rstrip(".")


def _streaming_note(method: descriptor_pb2.MethodDescriptorProto) -> str:
    notes = []
    if method.client_streaming:
        notes.append("the request body is a JSON array of request messages")
    if method.server_streaming:
        notes.append("the response is a JSON array of response messages")
    return f"\n\nStreaming over HTTP/JSON: {'; '.join(notes)}." if notes else ""


def _parameters(
    method: descriptor_pb2.MethodDescriptorProto, body: str, bound: list[str], schemas: Schemas
) -> list[dict[str, Any]]:
    """Path variables, then (without a `*` body) the request's other scalar fields as query
    parameters, named by their proto field paths as the transcoder reads them."""
    parameters = []
    for name in bound:
        described = schemas.described(method.input_type, name)
        parameters.append({"name": name, "in": "path", "required": True, **described})
    if body == "*":
        return parameters
    for field in schemas.messages[method.input_type].field:
        if field.name in bound or field.name == body or field.type in _QUERY_TYPES:
            continue
        described = schemas.described(method.input_type, field.name)
        parameters.append({"name": field.name, "in": "query", **described})
    return parameters


def _request_body(
    method: descriptor_pb2.MethodDescriptorProto, body: str, bound: list[str], schemas: Schemas
) -> dict[str, Any]:
    field = schemas.field(method.input_type, body) if body != "*" else None
    if (field.type_name if field else method.input_type) == HTTP_BODY:
        # The raw request body, in its own Content-Type (a stream too: the transcoder cuts it).
        return {"required": True, "content": {"*/*": {"schema": RAW_BODY}}}
    if field is None:
        schema = schemas.without(method.input_type, set(bound))
    else:
        schema = schemas.field_schema(field)
    if method.client_streaming:
        schema = {"type": "array", "items": schema}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _responses(
    method: descriptor_pb2.MethodDescriptorProto, text: str, schemas: Schemas
) -> dict[str, Any]:
    schema: Schema = ref(method.output_type)
    media_type = "application/json"
    if method.output_type == HTTP_BODY:
        schema, media_type = RAW_BODY, "*/*"  # the reply's own bytes and Content-Type
    elif method.server_streaming:
        schema = {"type": "array", "items": schema}
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {media_type: {"schema": schema}}}
    }
    named = codes_named(text)
    by_status: dict[int, list[str]] = {}
    for code in [*named, *(code for code in EVERY_RPC if code not in named)]:
        reason = EVERY_RPC.get(code, "see the description above")
        by_status.setdefault(HTTP_STATUS[code], []).append(f"`{code}`: {reason}")
    for status in sorted(by_status):
        responses[str(status)] = {
            "description": "; ".join(by_status[status]),
            "content": {"application/json": {"schema": ref(STATUS_SCHEMA_NAME)}},
        }
    return responses


def generate(request: plugin_pb2.CodeGeneratorRequest) -> Iterator[tuple[str, str]]:
    by_name = {file.name: file for file in request.proto_file}
    names = sorted(name for name in request.file_to_generate if name.startswith("ragmesh/"))
    files = [by_name[name] for name in names]
    imported = [file for file in request.proto_file if file.name not in names]
    yield OUTPUT, json.dumps(document(files, imported), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    for name, content in generate(request):
        response.file.add(name=name, content=content)
    sys.stdout.buffer.write(response.SerializeToString())


if __name__ == "__main__":
    main()
