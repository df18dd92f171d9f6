"""Request checks: each failure names the field and the limit."""

from __future__ import annotations

import pytest

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmeshd.search.records import FusionMethod, Mode
from ragmeshd.search.validation import (
    InvalidRequestError,
    check_collection_name,
    check_documents,
    check_ids,
    check_index_settings,
    check_search,
    check_vector,
    check_vector_dimensions,
)
from ragmeshd.settings import SearchSettings

SETTINGS = SearchSettings()


def doc(id: str = "a", text: str = "text", **kwargs) -> pb.Document:  # type: ignore[no-untyped-def]
    return pb.Document(id=id, text=text, **kwargs)


@pytest.mark.parametrize("name", ["a", "scifact", "beir-scifact_2", "0" * 63])
def test_good_collection_names(name: str) -> None:
    assert check_collection_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "-x", "has space", "a" * 64, "ü"])
def test_bad_collection_names(name: str) -> None:
    with pytest.raises(InvalidRequestError, match="1 to 63 characters"):
        check_collection_name(name)


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ([], "documents is empty: send 1 to 256"),
        ([doc(str(i)) for i in range(257)], "257 documents; the limit is 256 per call"),
        ([doc("")], r"documents\[0\].id is empty"),
        ([doc("x" * 257)], r"documents\[0\].id has 257 characters; the limit is 256"),
        ([doc("a\nb")], "control character"),
        ([doc("a"), doc("a")], r"documents\[1\].id 'a' repeats documents\[0\].id"),
        ([doc(text="  ")], r"documents\[0\].text is empty"),
        ([doc(text="x" * 100_001)], "100001 characters; the limit is 100000"),
        (
            [doc(metadata={f"k{i}": pb.MetadataValue(bool_value=True) for i in range(33)})],
            "33 keys; the limit is 32",
        ),
        ([doc(metadata={"bad-key": pb.MetadataValue(bool_value=True)})], "valid metadata key"),
        (
            [doc(metadata={"k": pb.MetadataValue(string_value="x" * 1025)})],
            "1025 characters; the limit is 1024",
        ),
        ([doc(vector=[float("nan"), 1.0])], "not a finite number"),
        ([doc(vector=[0.0, 0.0])], "all zeros"),
    ],
)
def test_bad_documents(documents: list[pb.Document], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        check_documents(documents, SETTINGS)


def test_good_documents_are_converted() -> None:
    (checked,) = check_documents(
        [
            doc(
                metadata={
                    "n": pb.MetadataValue(number_value=3),
                    "s": pb.MetadataValue(string_value="x"),
                    "b": pb.MetadataValue(bool_value=False),
                },
                vector=[1.0, 2.0],
            )
        ],
        SETTINGS,
    )
    assert checked.metadata == {"b": False, "n": 3.0, "s": "x"}
    assert checked.vector is not None and checked.vector.tolist() == [1.0, 2.0]


def test_vector_dimension_mismatch_names_both_sizes() -> None:
    with pytest.raises(
        InvalidRequestError, match="has 2 values; the collection's vectors have 384"
    ):
        check_vector_dimensions(check_vector([1.0, 2.0], "v"), 384, "v")


def test_ids() -> None:
    assert check_ids(["a", "b", "a"], SETTINGS) == ["a", "b"]
    with pytest.raises(InvalidRequestError, match="ids is empty"):
        check_ids([], SETTINGS)
    with pytest.raises(InvalidRequestError, match="1001 ids; the limit is 1000"):
        check_ids([str(i) for i in range(1001)], SETTINGS)


def test_index_settings() -> None:
    check_index_settings(16, 64)
    with pytest.raises(InvalidRequestError, match="hnsw_m is 1; it must be 2 to 100"):
        check_index_settings(1, 64)
    with pytest.raises(InvalidRequestError, match="must be at least twice hnsw_m"):
        check_index_settings(16, 20)


def test_search_defaults() -> None:
    checked = check_search(pb.SearchRequest(query="cells"), SETTINGS)
    assert checked.mode is Mode.HYBRID
    assert checked.top_k == 10
    assert checked.fusion.method is FusionMethod(SETTINGS.fusion_method)


def test_fusion_method_and_its_default_weights() -> None:
    rrf = check_search(pb.SearchRequest(query="x", fusion_method=pb.FUSION_METHOD_RRF), SETTINGS)
    assert (rrf.fusion.method, rrf.fusion.k, rrf.fusion.dense_weight) == (
        FusionMethod.RRF,
        SETTINGS.rrf_k,
        SETTINGS.rrf_dense_weight,
    )
    request = pb.SearchRequest(
        query="x", fusion_method=pb.FUSION_METHOD_DISTRIBUTION, keyword_weight=0.25
    )
    scored = check_search(request, SETTINGS).fusion
    assert scored.method is FusionMethod.DISTRIBUTION
    assert (scored.dense_weight, scored.keyword_weight) == (
        SETTINGS.score_fusion_dense_weight,
        0.25,
    )
    dbsf = check_search(pb.SearchRequest(query="x", fusion_method=pb.FUSION_METHOD_DBSF), SETTINGS)
    assert dbsf.fusion.method is FusionMethod.DBSF


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.SearchRequest(query="x", top_k=101), "top_k is 101; it must be 1 to 100"),
        (pb.SearchRequest(query="x", top_k=-1), "top_k is -1"),
        (pb.SearchRequest(query=""), "query is empty; HYBRID search needs query text"),
        (
            pb.SearchRequest(query="", mode=pb.SEARCH_MODE_KEYWORD, query_vector=[1.0]),
            "KEYWORD search needs query text",
        ),
        (
            pb.SearchRequest(query=" ", mode=pb.SEARCH_MODE_DENSE),
            "send query text or a query_vector",
        ),
        (pb.SearchRequest(query="x" * 2001), "2001 characters; the limit is 2000"),
        (pb.SearchRequest(query="x", mode=9), "mode 9 is not a SearchMode"),
        (pb.SearchRequest(query="x", rrf_k=0), "rrf_k is 0; it must be 1 to 1000"),
        (pb.SearchRequest(query="x", fusion_method=7), "fusion_method 7 is not a FusionMethod"),
        (pb.SearchRequest(query="x", dense_weight=-1), "dense_weight is -1.0; it must be 0 to 100"),
        (
            pb.SearchRequest(query="x", dense_weight=0, keyword_weight=0),
            "both 0",
        ),
    ],
)
def test_bad_searches(request_: pb.SearchRequest, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        check_search(request_, SETTINGS)


def test_dense_search_by_vector_alone() -> None:
    checked = check_search(
        pb.SearchRequest(mode=pb.SEARCH_MODE_DENSE, query_vector=[0.0, 1.0]), SETTINGS
    )
    assert checked.vector is not None and checked.text == ""
