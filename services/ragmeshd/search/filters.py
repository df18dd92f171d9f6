"""Metadata filters: from the request message, to a SQL condition, to a Qdrant filter.

Semantics (the same in both backends): every condition must hold; a document without the key
fails; values compare by type (the string "1" is not the number 1); ranges apply to numbers
only.
"""

from __future__ import annotations

import json
import math
from typing import Any

from qdrant_client import models as qm

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmeshd.runtime.tenancy import ACL_KEY
from ragmeshd.search.records import (
    AnyOf,
    Condition,
    Equals,
    Filter,
    MetadataValue,
    NumericRange,
    Visible,
)
from ragmeshd.search.validation import InvalidRequestError, check_metadata_key, value_from_proto
from ragmeshd.settings import SearchSettings

# Where the document's metadata lives in a Qdrant point's payload.
QDRANT_METADATA_FIELD = "metadata"
# A point's document groups as a list (Qdrant matches any element), from its `acl` metadata.
QDRANT_ACL_FIELD = "acl_groups"


def acl_groups(acl: MetadataValue | None) -> list[str]:
    """The groups of an `acl` metadata value ("finance,legal")."""
    return [g for g in str(acl).split(",") if g] if isinstance(acl, str) else []


def parse_filter(message: pb.MetadataFilter, settings: SearchSettings) -> Filter:
    """Validate a MetadataFilter message; raises InvalidRequestError naming the problem."""
    conditions = message.conditions
    if len(conditions) > settings.max_filter_conditions:
        raise InvalidRequestError(
            f"filter has {len(conditions)} conditions; the limit is"
            f" {settings.max_filter_conditions}"
        )
    return tuple(
        _parse_condition(condition, f"filter.conditions[{index}]", settings)
        for index, condition in enumerate(conditions)
    )


def _parse_condition(message: pb.FieldCondition, field: str, settings: SearchSettings) -> Condition:
    key = check_metadata_key(message.key, f"{field}.key {message.key!r}", settings)
    test = message.WhichOneof("test")
    if test == "equals":
        return Equals(key, value_from_proto(message.equals, f"{field}.equals", settings))
    if test == "any_of":
        values = message.any_of.values
        if not 1 <= len(values) <= settings.max_filter_values:
            raise InvalidRequestError(
                f"{field}.any_of has {len(values)} values; it must have 1 to"
                f" {settings.max_filter_values}"
            )
        return AnyOf(
            key,
            tuple(
                value_from_proto(value, f"{field}.any_of.values[{index}]", settings)
                for index, value in enumerate(values)
            ),
        )
    if test == "range":
        bounds = {
            name: getattr(message.range, name)
            for name in ("gt", "gte", "lt", "lte")
            if message.range.HasField(name)
        }
        if not bounds:
            raise InvalidRequestError(f"{field}.range has no bound: set gt, gte, lt or lte")
        for name, bound in bounds.items():
            if not math.isfinite(bound):
                raise InvalidRequestError(f"{field}.range.{name} is not a finite number")
        return NumericRange(key, **bounds)
    raise InvalidRequestError(f"{field} has no test: set equals, any_of or range")


class SqlParameters:
    """Collects query parameters and hands out their $n placeholders."""

    def __init__(self, first: int = 1) -> None:
        self._first = first
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${self._first + len(self.values) - 1}"


def to_sql(conditions: Filter, column: str, params: SqlParameters) -> str:
    """A SQL boolean expression over the jsonb `column`; "TRUE" for no conditions."""
    if not conditions:
        return "TRUE"
    return " AND ".join(_condition_sql(condition, column, params) for condition in conditions)


def _json_object(key: str, value: MetadataValue) -> str:
    return json.dumps({key: value})


def _condition_sql(condition: Condition, column: str, params: SqlParameters) -> str:
    if isinstance(condition, Visible):
        key = params.add(ACL_KEY)
        return (
            f"(NOT ({column} ? {key}) OR string_to_array({column} ->> {key}, ',')"
            f" && {params.add(list(condition.groups))}::text[])"
        )
    if isinstance(condition, Equals):
        # Containment compares by type and, for numbers, by value (1 = 1.0).
        return f"{column} @> {params.add(_json_object(condition.key, condition.value))}::jsonb"
    if isinstance(condition, AnyOf):
        objects = [_json_object(condition.key, value) for value in condition.values]
        return f"{column} @> ANY({params.add(objects)}::jsonb[])"
    key = params.add(condition.key)
    # CASE keeps the cast from ever seeing a non-number.
    number = (
        f"(CASE WHEN jsonb_typeof({column} -> {key}) = 'number'"
        f" THEN ({column} ->> {key})::float8 END)"
    )
    parts = []
    for name, operator in (("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<=")):
        bound = getattr(condition, name)
        if bound is not None:
            parts.append(f"{number} {operator} {params.add(float(bound))}::float8")
    return "(" + " AND ".join(parts) + ")"


def to_qdrant(conditions: Filter) -> qm.Filter | None:
    """The equivalent Qdrant payload filter; None for no conditions."""
    if not conditions:
        return None
    return qm.Filter(must=[_condition_qdrant(condition) for condition in conditions])


def _value_qdrant(key: str, value: MetadataValue) -> qm.FieldCondition:
    field = f"{QDRANT_METADATA_FIELD}.{key}"
    if isinstance(value, bool | str):
        return qm.FieldCondition(key=field, match=qm.MatchValue(value=value))
    # Numbers are stored as floats; an exact match is the closed range [v, v].
    return qm.FieldCondition(key=field, range=qm.Range(gte=value, lte=value))


def _condition_qdrant(condition: Condition) -> qm.FieldCondition | qm.Filter:
    if isinstance(condition, Visible):
        should: list[qm.Condition] = [
            qm.IsEmptyCondition(is_empty=qm.PayloadField(key=QDRANT_ACL_FIELD))
        ]
        if condition.groups:
            should.append(
                qm.FieldCondition(
                    key=QDRANT_ACL_FIELD, match=qm.MatchAny(any=list(condition.groups))
                )
            )
        return qm.Filter(should=should)
    field = f"{QDRANT_METADATA_FIELD}.{condition.key}"
    if isinstance(condition, Equals):
        return _value_qdrant(condition.key, condition.value)
    if isinstance(condition, AnyOf):
        strings = [value for value in condition.values if isinstance(value, str)]
        others = [value for value in condition.values if not isinstance(value, str)]
        should = [_value_qdrant(condition.key, value) for value in others]
        if strings:
            should.append(qm.FieldCondition(key=field, match=qm.MatchAny(any=strings)))
        return qm.Filter(should=should)
    return qm.FieldCondition(
        key=field,
        range=qm.Range(gt=condition.gt, gte=condition.gte, lt=condition.lt, lte=condition.lte),
    )
