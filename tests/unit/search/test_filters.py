"""Metadata filters: checked, translated to SQL and to Qdrant, with the same meaning."""

from __future__ import annotations

import json

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmeshd.search.filters import SqlParameters, parse_filter, to_qdrant, to_sql
from ragmeshd.search.records import AnyOf, Equals, NumericRange
from ragmeshd.search.validation import InvalidRequestError
from ragmeshd.settings import SearchSettings

SETTINGS = SearchSettings()


def s(value: str) -> pb.MetadataValue:
    return pb.MetadataValue(string_value=value)


def n(value: float) -> pb.MetadataValue:
    return pb.MetadataValue(number_value=value)


def b(value: bool) -> pb.MetadataValue:
    return pb.MetadataValue(bool_value=value)


def test_parse_all_three_tests() -> None:
    message = pb.MetadataFilter(
        conditions=[
            pb.FieldCondition(key="lang", equals=s("en")),
            pb.FieldCondition(key="year", any_of=pb.ValueList(values=[n(2020), n(2021)])),
            pb.FieldCondition(key="score", range=pb.NumericRange(gte=0.5, lt=2)),
        ]
    )
    assert parse_filter(message, SETTINGS) == (
        Equals("lang", "en"),
        AnyOf("year", (2020.0, 2021.0)),
        NumericRange("score", gte=0.5, lt=2.0),
    )
    assert parse_filter(pb.MetadataFilter(), SETTINGS) == ()


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (pb.FieldCondition(key="bad key", equals=s("x")), "not a valid metadata key"),
        (pb.FieldCondition(key="k"), "has no test"),
        (pb.FieldCondition(key="k", equals=pb.MetadataValue()), "has no value"),
        (pb.FieldCondition(key="k", any_of=pb.ValueList()), "it must have 1 to 64"),
        (pb.FieldCondition(key="k", range=pb.NumericRange()), "has no bound"),
        (pb.FieldCondition(key="k", range=pb.NumericRange(gt=float("nan"))), "not a finite"),
        (pb.FieldCondition(key="k", equals=n(float("inf"))), "not a finite number"),
    ],
)
def test_bad_conditions_name_the_field(condition: pb.FieldCondition, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message) as raised:
        parse_filter(pb.MetadataFilter(conditions=[condition]), SETTINGS)
    assert "filter.conditions[0]" in str(raised.value)


def test_too_many_conditions_or_values_name_the_limit() -> None:
    many = pb.MetadataFilter(conditions=[pb.FieldCondition(key="k", equals=s("x"))] * 17)
    with pytest.raises(InvalidRequestError, match="17 conditions; the limit is 16"):
        parse_filter(many, SETTINGS)
    values = pb.ValueList(values=[s(str(i)) for i in range(65)])
    wide = pb.MetadataFilter(conditions=[pb.FieldCondition(key="k", any_of=values)])
    with pytest.raises(InvalidRequestError, match="has 65 values; it must have 1 to 64"):
        parse_filter(wide, SETTINGS)


def test_sql_translation_is_parameterised() -> None:
    params = SqlParameters(first=2)
    sql = to_sql(
        (
            Equals("lang", "en"),
            AnyOf("year", (2020.0, True)),
            NumericRange("score", gt=1.0, lte=3.0),
        ),
        "p.metadata",
        params,
    )
    number = (
        "(CASE WHEN jsonb_typeof(p.metadata -> $4) = 'number' THEN (p.metadata ->> $4)::float8 END)"
    )
    assert sql == (
        "p.metadata @> $2::jsonb AND p.metadata @> ANY($3::jsonb[])"
        f" AND ({number} > $5::float8 AND {number} <= $6::float8)"
    )
    assert [json.loads(params.values[0]), [json.loads(v) for v in params.values[1]]] == [
        {"lang": "en"},
        [{"year": 2020.0}, {"year": True}],
    ]
    assert params.values[2:] == ["score", 1.0, 3.0]
    assert to_sql((), "metadata", SqlParameters()) == "TRUE"


def test_qdrant_translation() -> None:
    translated = to_qdrant((Equals("lang", "en"), Equals("n", 2.0), NumericRange("s", gte=1.0)))
    assert translated == qm.Filter(
        must=[
            qm.FieldCondition(key="metadata.lang", match=qm.MatchValue(value="en")),
            qm.FieldCondition(key="metadata.n", range=qm.Range(gte=2.0, lte=2.0)),
            qm.FieldCondition(key="metadata.s", range=qm.Range(gte=1.0)),
        ]
    )
    assert to_qdrant(()) is None


# The reference meaning of a filter, against which Qdrant's evaluation is checked (the SQL
# evaluation is checked against the same cases by the integration contract suite).
DOCUMENTS = {
    1: {"lang": "en", "year": 2020.0, "ok": True},
    2: {"lang": "de", "year": 2021.0, "ok": False},
    3: {"lang": "en", "year": 2022.5},
    4: {"lang": "1", "year": "2020"},
    5: {},
}
CASES = [
    ((Equals("lang", "en"),), {1, 3}),
    ((Equals("year", 2020.0),), {1}),
    ((Equals("ok", True),), {1}),
    ((AnyOf("lang", ("de", "1")),), {2, 4}),
    ((AnyOf("year", (2021.0, "2020")),), {2, 4}),
    ((NumericRange("year", gt=2020.0),), {2, 3}),
    ((NumericRange("year", gte=2020.0, lte=2021.0),), {1, 2}),
    ((Equals("lang", "en"), NumericRange("year", lt=2022.0)), {1}),
    ((Equals("missing", "x"),), set()),
]


@pytest.mark.parametrize(("conditions", "expected"), CASES)
def test_qdrant_evaluates_filters_as_specified(conditions, expected) -> None:  # type: ignore[no-untyped-def]
    client = QdrantClient(location=":memory:")
    client.create_collection(
        "c", vectors_config=qm.VectorParams(size=2, distance=qm.Distance.COSINE)
    )
    client.upsert(
        "c",
        points=[
            qm.PointStruct(id=i, vector=[1.0, float(i)], payload={"metadata": metadata})
            for i, metadata in DOCUMENTS.items()
        ],
    )
    count_filter = to_qdrant(conditions)
    found = {point.id for point in client.scroll("c", scroll_filter=count_filter, limit=100)[0]}
    assert found == expected
