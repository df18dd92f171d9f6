"""Hypothesis strategies for any protobuf message, built from its descriptor.

Every field may be set or not; values lean on the extremes a server must survive: empty,
huge, control and bidirectional characters, NUL, injection-looking strings, the ends of every
integer range, NaN and infinities, enum numbers no enum names, empty and oversized repeated
fields, nested messages to a bounded depth (a Timestamp is a message too, so its seconds and
nanos go out of range), and map entries. `KNOWN_NAMES` are mixed into strings so that some
calls reach real collections and documents instead of failing at the first lookup.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

# Names the fuzz tests create before fuzzing (a collection and its documents).
KNOWN_NAMES = ("fuzz", "doc-1", "doc-2")

# Longer than every documented string limit of the API (the largest is a document's
# 100,000 characters), so such a string is refused before any work is done with it.
HUGE_CHARS = 110_000

_ODD_STRINGS = (
    "",
    " ",
    "\x00",
    "\t\n\r",
    "\u202etxt.exe",  # right-to-left override
    "\ufeff",  # byte order mark
    "🙂" * 8,
    "e\u0301" * 4,  # combining accents
    "'; DROP TABLE documents; --",
    "%s%n%x",
    "../../etc/passwd",
    "${jndi:ldap://x}",
)

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted({low, low + 1, -1 if low < 0 else 1, 0, 1, high - 1, high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


@st.composite
def strings(draw: st.DrawFn) -> str:
    # One string in about thirty is huge: enough to hit every limit, rare enough that
    # generating repeated fields of them stays cheap.
    if draw(st.integers(0, 29)) == 0:
        return "a" * HUGE_CHARS
    return draw(
        st.one_of(st.text(max_size=24), st.sampled_from(_ODD_STRINGS), st.sampled_from(KNOWN_NAMES))
    )


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        return _integers(*_INT_RANGES[kind])
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return strings()
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=32), st.just(b"\xff" * HUGE_CHARS))
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        # proto3 enums are open: any int32 may arrive, named or not.
        return st.one_of(st.sampled_from(numbers), _integers(-(2**31), 2**31 - 1))
    raise TypeError(f"no strategy for field type {kind} of {field.full_name}")


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    return _scalar(field)


def _repeated(element: st.SearchStrategy[Any], depth: int) -> st.SearchStrategy[list[Any]]:
    # Mostly a few elements; in the request itself sometimes more than the per-call count
    # limits it is checked against (32 texts per Embed, 16 collections per Ask); nested lists
    # stay short, or lists of lists would grow by the power of their depth.
    few = st.lists(element, max_size=4)
    if depth > 0:
        return few
    return st.one_of(few, st.lists(element, min_size=33, max_size=34))


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and field.message_type.GetOptions().map_entry
        and _is_repeated(field)
    )


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


MAX_DEPTH = 3


@st.composite
def _message(draw: st.DrawFn, descriptor: Descriptor, depth: int) -> Message:
    message = GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if depth >= MAX_DEPTH and field.type == FieldDescriptor.TYPE_MESSAGE:
            continue
        if not draw(st.booleans()):
            continue
        target = getattr(message, field.name)
        if _is_map(field):
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            entries = draw(
                st.dictionaries(_scalar(key_field), _value(value_field, depth), max_size=4)
            )
            for key, value in entries.items():
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    target[key].CopyFrom(value)
                else:
                    target[key] = value
        elif _is_repeated(field):
            values = draw(_repeated(_value(field, depth), depth))
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for value in values:
                    target.add().CopyFrom(value)
            else:
                target.extend(values)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            target.CopyFrom(draw(messages(field.message_type, depth + 1)))
        else:
            setattr(message, field.name, draw(_scalar(field)))
    return message


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Random well-typed instances of `descriptor`'s message."""
    return _message(descriptor, depth)


def undecodable_bytes() -> st.SearchStrategy[bytes]:
    """Bytes that are (mostly) not a valid protobuf encoding: truncated varints, wrong wire
    types, lengths past the end, invalid UTF-8 in string fields, and plain noise."""
    return st.one_of(
        st.binary(min_size=1, max_size=64),
        st.sampled_from(
            [
                b"\x0a\xff\xff\xff\xff\x0f",  # field 1, length-delimited, length past the end
                b"\x0a\x02\xc3\x28",  # field 1 as a string of invalid UTF-8
                b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a varint too long
                b"\x0f",  # wire type 7 does not exist
                b"\x00",  # field number 0 is invalid
                b"\x80",  # a truncated tag
            ]
        ),
    )
