"""JSON Schemas (OpenAPI 3.1's dialect, JSON Schema 2020-12) for the protos' messages and
enums, as they look on the wire of Envoy's gRPC-JSON transcoder: the proto3 JSON mapping
with lowerCamelCase names, 64-bit integers as strings, enums by name, bytes as base64,
google.protobuf.Timestamp as an RFC 3339 string. Descriptions are the protos' comments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from google.protobuf import descriptor_pb2

from ragmeshd.codegen.apidoc import Comments

FieldProto: TypeAlias = descriptor_pb2.FieldDescriptorProto
Schema: TypeAlias = dict[str, Any]

# Field numbers in descriptor.proto, for source-code-info paths.
_MESSAGE, _ENUM = 4, 5
_FIELD, _NESTED, _NESTED_ENUM, _VALUE = 2, 3, 4, 2

_INT64 = {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
_UINT64 = {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}
_SCALARS: dict[int, Schema] = {
    FieldProto.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldProto.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldProto.TYPE_INT64: _INT64,
    FieldProto.TYPE_SINT64: _INT64,
    FieldProto.TYPE_SFIXED64: _INT64,
    FieldProto.TYPE_UINT64: _UINT64,
    FieldProto.TYPE_FIXED64: _UINT64,
    FieldProto.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldProto.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldProto.TYPE_BOOL: {"type": "boolean"},
    FieldProto.TYPE_STRING: {"type": "string"},
    FieldProto.TYPE_BYTES: {"type": "string", "format": "byte", "contentEncoding": "base64"},
}
# Well-known types have their own JSON form (the proto3 JSON mapping), written in place.
WELL_KNOWN: dict[str, Schema] = {
    ".google.protobuf.Timestamp": {
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339, UTC (Z), e.g. 2026-01-31T12:00:00Z",
    },
    ".google.protobuf.Duration": {
        "type": "string",
        "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
        "description": "seconds with an s suffix, e.g. 1.5s",
    },
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "description": "Any message: its type URL in @type, beside its own fields",
    },
    ".google.protobuf.Struct": {"type": "object"},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array"},
    ".google.protobuf.FieldMask": {"type": "string"},
    ".google.protobuf.StringValue": {"type": ["string", "null"]},
    ".google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    ".google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    ".google.protobuf.Int64Value": {**_INT64, "type": ["string", "null"]},
    ".google.protobuf.FloatValue": {"type": ["number", "null"], "format": "float"},
    ".google.protobuf.DoubleValue": {"type": ["number", "null"], "format": "double"},
}
# A google.api.HttpBody field that an HTTP rule names as the body: the raw HTTP body, with its
# own Content-Type (the transcoder fills content_type and data).
HTTP_BODY = ".google.api.HttpBody"
RAW_BODY: Schema = {"type": "string", "format": "binary"}
# google.rpc.Status, the body of every failed HTTP/JSON call (convert_grpc_status).
STATUS_SCHEMA_NAME = "google.rpc.Status"
STATUS_SCHEMA: Schema = {
    "type": "object",
    "description": "A failed call: the gRPC status code and message (INTERNAL carries only an"
    " error id; the details are in the server's log under it).",
    "properties": {
        "code": {"type": "integer", "format": "int32", "description": "The gRPC status code."},
        "message": {"type": "string", "description": "What went wrong, for a person to read."},
        "details": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["code", "message"],
}


def ref(full_name: str) -> Schema:
    """A reference to the component schema of a message or enum (full name, no dot)."""
    return {"$ref": f"#/components/schemas/{full_name.lstrip('.')}"}


class Schemas:
    """The component schemas of every message and enum in `files`, and each field's schema."""

    def __init__(
        self,
        files: list[descriptor_pb2.FileDescriptorProto],
        imported: Sequence[descriptor_pb2.FileDescriptorProto] = (),
    ) -> None:
        """Every message and enum of `files`, and those of `imported` (e.g.
        google.api.HttpBody) that they refer to."""
        self.components: dict[str, Schema] = {}
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self._maps: dict[str, descriptor_pb2.DescriptorProto] = {}
        for file in files:
            self._add_file(file, lambda _name: True)
        while missing := self._missing():

            def wanted(name: str, missing: set[str] = missing) -> bool:
                return any(m == name or m.startswith(f"{name}.") for m in missing)

            found = [file for file in imported if any(map(wanted, self._names(file)))]
            known = len(self.components)
            for file in found:
                self._add_file(file, wanted)
            if len(self.components) == known:
                raise KeyError(f"no proto defines {sorted(missing)}")
        self.components[STATUS_SCHEMA_NAME] = STATUS_SCHEMA

    def _add_file(
        self, file: descriptor_pb2.FileDescriptorProto, wanted: Callable[[str], bool]
    ) -> None:
        comments = Comments(file)
        for index, message in enumerate(file.message_type):
            if wanted(f"{file.package}.{message.name}"):
                self._add_message(message, f".{file.package}", comments, (_MESSAGE, index))
        for index, enum in enumerate(file.enum_type):
            if wanted(f"{file.package}.{enum.name}"):
                self._add_enum(enum, f".{file.package}", comments, (_ENUM, index))

    @staticmethod
    def _names(file: descriptor_pb2.FileDescriptorProto) -> set[str]:
        types = [*file.message_type, *file.enum_type]
        return {f"{file.package}.{each.name}" for each in types}

    def _missing(self) -> set[str]:
        """Top-level names referred to by a component but not yet among them."""
        prefix = "#/components/schemas/"
        referred = set(re.findall(f'"{prefix}([^"]+)"', json.dumps(self.components)))
        return {name for name in referred if name not in self.components}

    def _add_message(
        self,
        message: descriptor_pb2.DescriptorProto,
        scope: str,
        comments: Comments,
        path: tuple[int, ...],
    ) -> None:
        full = f"{scope}.{message.name}"
        if message.options.map_entry:
            self._maps[full] = message
            return
        self.messages[full] = message
        for index, nested in enumerate(message.nested_type):
            self._add_message(nested, full, comments, (*path, _NESTED, index))
        for index, enum in enumerate(message.enum_type):
            self._add_enum(enum, full, comments, (*path, _NESTED_ENUM, index))
        properties: dict[str, Schema] = {}
        oneofs = [oneof.name for oneof in message.oneof_decl]
        for index, field in enumerate(message.field):
            schema = dict(self.field_schema(field))
            text = comments.get(*path, _FIELD, index)
            if field.HasField("oneof_index") and not field.proto3_optional:
                text = f"(One of `{oneofs[field.oneof_index]}`: set at most one.) {text}"
            if text:
                known = schema.get("description")
                schema["description"] = f"{text}\n\n{known}" if known else text
            properties[field.json_name] = schema
        component: Schema = {"type": "object", "properties": properties}
        if text := comments.get(*path):
            component["description"] = text
        self.components[full.lstrip(".")] = component

    def _add_enum(
        self,
        enum: descriptor_pb2.EnumDescriptorProto,
        scope: str,
        comments: Comments,
        path: tuple[int, ...],
    ) -> None:
        full = f"{scope}.{enum.name}"
        lines = [comments.get(*path), ""]
        for index, value in enumerate(enum.value):
            described = " ".join(comments.get(*path, _VALUE, index).split())
            lines.append(f"- `{value.name}`: {described}".rstrip(": "))
        self.components[full.lstrip(".")] = {
            "type": "string",
            "enum": [value.name for value in enum.value],
            "description": "\n".join(lines).strip(),
        }

    def field_schema(self, field: FieldProto) -> Schema:
        """One field's schema: repeated fields are arrays, maps are objects."""
        if field.type_name in self._maps:
            value = self._maps[field.type_name].field[1]
            return {"type": "object", "additionalProperties": self._single(value)}
        single = self._single(field)
        if field.label == FieldProto.LABEL_REPEATED:
            return {"type": "array", "items": single}
        return single

    def _single(self, field: FieldProto) -> Schema:
        if field.type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[field.type_name])
        if field.type_name:
            return ref(field.type_name)
        return dict(_SCALARS[field.type])

    def field(self, message_name: str, path: str) -> FieldProto:
        """The field at a dotted proto field path (a path template's variable)."""
        message = self.messages[message_name]
        head, _, rest = path.partition(".")
        for field in message.field:
            if field.name == head:
                return self.field(field.type_name, rest) if rest else field
        raise KeyError(f"{message_name} has no field {path!r}")

    def described(self, message_name: str, path: str) -> Schema:
        """{"schema": ..., "description": ...} of the field at `path`, for a parameter."""
        field = self.field(message_name, path)
        owner = message_name if "." not in path else self._owner(message_name, path)
        schema = dict(self.components[owner.lstrip(".")]["properties"][field.json_name])
        description = schema.pop("description", "")
        return {"schema": schema, "description": description} if description else {"schema": schema}

    def _owner(self, message_name: str, path: str) -> str:
        head, _, rest = path.partition(".")
        field = self.field(message_name, head)
        return self._owner(field.type_name, rest) if "." in rest else field.type_name

    def without(self, message_name: str, bound: set[str]) -> Schema:
        """The message's schema less the fields a path template binds (a body that also set
        them would be refused by the transcoder)."""
        component = self.components[message_name.lstrip(".")]
        if not bound:
            return ref(message_name)
        names = {self.field(message_name, name).json_name for name in bound if "." not in name}
        properties = {k: v for k, v in component["properties"].items() if k not in names}
        schema = {**component, "properties": properties}
        return schema
