"""A protoc plugin (run by `make generate` through buf) that writes docs/api/ from the protos'
comments: every service, RPC (with its HTTP/JSON mapping and the status codes it returns),
message, field and enum.

buf hands it the same CodeGeneratorRequest as the code generators, source comments included,
so the reference can never say something the protos do not.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator

from google.api import annotations_pb2  # registers the google.api.http option
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

# Field numbers in descriptor.proto, for source-code-info paths.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM, _METHOD, _VALUE = 2, 3, 4, 2, 2
_CODES = (
    "CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS"
    " PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE"
    " UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED"
).split()
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
    "ABORTED": 409, "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "INTERNAL": 500, "UNKNOWN": 500,
    "DATA_LOSS": 500,
}  # fmt: skip
# What any RPC may answer besides the codes its own description names (docs/api.md has more).
EVERY_RPC = {
    "UNAUTHENTICATED": "no API key, or an unknown or revoked one",
    "INVALID_ARGUMENT": "a request over a limit or malformed; the message names the limit",
    "RESOURCE_EXHAUSTED": "the server is shedding load; retry after a pause",
    "UNAVAILABLE": "no healthy replica, or a dependency is down; safe to retry",
    "DEADLINE_EXCEEDED": "the caller's deadline passed",
    "INTERNAL": "an unexpected failure; the message carries an error id for the logs",
}
_SCALARS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "double",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT32: "sint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT64: "sint64",
}


class Comments:
    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self._by_path = {
            tuple(location.path): location.leading_comments
            for location in file.source_code_info.location
        }

    def get(self, *path: int) -> str:
        text = self._by_path.get(path, "")
        return "\n".join(line.removeprefix(" ") for line in text.strip("\n").split("\n")).strip()


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _anchor(full_name: str) -> str:
    return full_name.lower().replace(".", "")


def _type_link(type_name: str, local_package: str) -> str:
    name = type_name.lstrip(".")
    package, _, short = name.rpartition(".")
    if package.startswith("ragmesh"):
        domain = package.split(".")[1]
        page = "" if package == local_package else f"{domain}.md"
        return f"[{short}]({page}#{_anchor(name)})"
    return f"`{name}`"


def _field_type(field: descriptor_pb2.FieldDescriptorProto, package: str, maps: dict) -> str:
    if field.type_name and field.type_name in maps:
        key, value = maps[field.type_name]
        return f"map<{_field_type(key, package, maps)}, {_field_type(value, package, maps)}>"
    scalar = _SCALARS.get(field.type, "")
    base = _type_link(field.type_name, package) if field.type_name else f"`{scalar}`"
    if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
        return f"repeated {base}"
    if field.proto3_optional:
        return f"optional {base}"
    return base


def _http_rule(method: descriptor_pb2.MethodDescriptorProto) -> str:
    rule = method.options.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    if not verb:
        return ""
    path = getattr(rule, verb)
    body = f" (body: `{rule.body}`)" if rule.body else ""
    return f"`{verb.upper()} {path}`{body}"


def codes_named(text: str) -> list[str]:
    return [code for code in _CODES if re.search(rf"\b{code}\b", text)]


def render_file(file: descriptor_pb2.FileDescriptorProto) -> str:
    comments = Comments(file)
    package = file.package
    domain = package.split(".")[1]
    maps: dict[str, tuple] = {}
    for message in file.message_type:
        for nested in message.nested_type:
            if nested.options.map_entry:
                maps[f".{package}.{message.name}.{nested.name}"] = (
                    nested.field[0],
                    nested.field[1],
                )
    out = [
        f"# {domain} API (`{package}`)",
        "",
        "Generated by `make generate` from"
        f" [`protos/{file.name}`](../../protos/{file.name}); do not edit.",
        "",
    ]
    for s_index, service in enumerate(file.service):
        full = f"{package}.{service.name}"
        out += [f"## {service.name}", "", f"`{full}`", "", comments.get(_SERVICE, s_index), ""]
        out += ["| RPC | request → response | HTTP/JSON |", "| --- | --- | --- |"]
        for method in service.method:
            request = ("stream " if method.client_streaming else "") + _type_link(
                method.input_type, package
            )
            response = ("stream " if method.server_streaming else "") + _type_link(
                method.output_type, package
            )
            out.append(
                f"| [{method.name}](#{_anchor(full + '.' + method.name)}) | {request} → {response}"
                f" | {_http_rule(method)} |"
            )
        out.append("")
        for m_index, method in enumerate(service.method):
            text = comments.get(_SERVICE, s_index, _METHOD, m_index)
            out += [
                f'### <a id="{_anchor(full + "." + method.name)}"></a>{service.name}.{method.name}',
                "",
                text,
                "",
                f"- gRPC: `/{full}/{method.name}`",
                f"- HTTP/JSON: {_http_rule(method) or 'none'}",
            ]
            if method.client_streaming or method.server_streaming:
                out.append(
                    "- Streaming over HTTP/JSON: "
                    + (
                        "the request body is a JSON array of messages; "
                        if method.client_streaming
                        else ""
                    )
                    + (
                        "the response is a JSON array of messages."
                        if method.server_streaming
                        else ""
                    )
                )
            named = codes_named(text)
            codes = ", ".join(f"`{code}` ({HTTP_STATUS[code]})" for code in named) or "none"
            out += [
                f"- Status codes named above: {codes}; and those [every RPC may"
                " return](README.md#status-codes).",
                "",
            ]
    out += ["## Messages", ""]
    for m_index, message in enumerate(file.message_type):
        out += _message(
            message, comments, package, maps, (_MESSAGE, m_index), f"{package}.{message.name}"
        )
    if file.enum_type:
        out += ["## Enums", ""]
        for e_index, enum in enumerate(file.enum_type):
            out += _enum(enum, comments, (_ENUM, e_index), f"{package}.{enum.name}")
    return "\n".join(out).rstrip() + "\n"


def _message(
    message: descriptor_pb2.DescriptorProto,
    comments: Comments,
    package: str,
    maps: dict,
    path: tuple[int, ...],
    full: str,
) -> list[str]:
    if message.options.map_entry:
        return []
    out = [f'### <a id="{_anchor(full)}"></a>{full.removeprefix(package + ".")}', ""]
    out += [comments.get(*path), ""]
    if message.field:
        out += ["| field | JSON | type | description |", "| --- | --- | --- | --- |"]
        oneofs = [o.name for o in message.oneof_decl]
        for f_index, field in enumerate(message.field):
            description = _one_line(comments.get(*path, _FIELD, f_index))
            if field.HasField("oneof_index") and not field.proto3_optional:
                description = f"(one of `{oneofs[field.oneof_index]}`) {description}"
            out.append(
                f"| `{field.name}` | `{field.json_name}` | {_field_type(field, package, maps)} |"
                f" {description} |"
            )
        out.append("")
    for n_index, nested in enumerate(message.nested_type):
        out += _message(
            nested, comments, package, maps, (*path, _NESTED, n_index), f"{full}.{nested.name}"
        )
    for e_index, enum in enumerate(message.enum_type):
        out += _enum(enum, comments, (*path, _NESTED_ENUM, e_index), f"{full}.{enum.name}")
    return out


def _enum(
    enum: descriptor_pb2.EnumDescriptorProto,
    comments: Comments,
    path: tuple[int, ...],
    full: str,
) -> list[str]:
    out = [f'### <a id="{_anchor(full)}"></a>{enum.name}', "", comments.get(*path), ""]
    out += ["| value | number | description |", "| --- | --- | --- |"]
    for v_index, value in enumerate(enum.value):
        description = _one_line(comments.get(*path, _VALUE, v_index))
        out.append(f"| `{value.name}` | {value.number} | {description} |")
    return [*out, ""]


def render_index(files: list[descriptor_pb2.FileDescriptorProto]) -> str:
    out = [
        "# API reference",
        "",
        "Generated by `make generate` from the comments in `protos/`; do not edit. Every RPC is"
        " reachable as gRPC and as HTTP/JSON on Envoy's client listener, with the same client"
        " certificate and API key (`authorization: Bearer <key>`). HTTP/JSON field names are"
        " the lowerCamelCase JSON names below; enums are sent by name; 64-bit integers are"
        " strings. A failed call answers with the HTTP status for its gRPC code and a body"
        ' `{"code": <gRPC code number>, "message": "...", "details": []}`.',
        "",
        "The same API as OpenAPI 3.1 is [openapi.json](openapi.json) (ragmeshd/codegen/openapi.py),"
        " which the mesh serves at `GET /openapi.json`, with Swagger UI at `GET /docs` to try"
        " every route from a browser.",
        "",
        "| service | page |",
        "| --- | --- |",
    ]
    for file in files:
        domain = file.package.split(".")[1]
        for service in file.service:
            out.append(f"| `{file.package}.{service.name}` | [{domain}.md]({domain}.md) |")
    out += [
        "",
        "## Status codes",
        "",
        "Besides the codes each RPC's description names, every RPC may return:",
        "",
        "| gRPC code | HTTP | when |",
        "| --- | --- | --- |",
    ]
    for code, when in EVERY_RPC.items():
        out.append(f"| `{code}` | {HTTP_STATUS[code]} | {when} |")
    return "\n".join(out) + "\n"


def generate(request: plugin_pb2.CodeGeneratorRequest) -> Iterator[tuple[str, str]]:
    by_name = {file.name: file for file in request.proto_file}
    files = [by_name[name] for name in request.file_to_generate if name.startswith("ragmesh/")]
    for file in files:
        yield f"{file.package.split('.')[1]}.md", render_file(file)
    yield "README.md", render_index(files)


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
