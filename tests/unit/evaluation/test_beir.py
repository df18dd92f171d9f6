"""`ragmesh eval`'s pieces that need no server: reading a BEIR split, the --fusion specs, the
report's verdicts, and the offline fusion study's exact BM25."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmeshd.evaluation.beir import (
    TOP_K,
    BeirData,
    EvalReport,
    FusionVariant,
    ModeScore,
    format_report,
    load_beir,
    parse_fusion,
    score,
)
from ragmeshd.evaluation.fusion_study import bm25_rankings
from ragmeshd.search.keywords import bm25_idf
from tests.beir_tiny import CORPUS, JUDGED, write_tiny_beir


def test_load_beir_keeps_judged_queries_and_relevant_documents(tmp_path: Path) -> None:
    data = load_beir(write_tiny_beir(tmp_path / "tiny"), "test")
    assert data.name == "tiny"
    assert set(data.corpus) == set(CORPUS)
    assert data.corpus["d01"].startswith("Honey bees Worker honey bees")  # title, then text
    # Score 0 (q8) and no judgement (q9) drop the query; a judged document that is not in the
    # corpus is not relevant.
    assert set(data.queries) == JUDGED
    assert data.qrels["q1"] == {"d01"}
    assert data.qrels["q4"] == {"d05", "d10"}
    assert data.queries["q7"] == "Fresnel lens lighthouse"


def test_load_beir_reads_qrels_without_a_header(tmp_path: Path) -> None:
    directory = write_tiny_beir(tmp_path / "tiny")
    (directory / "qrels" / "dev.tsv").write_text("q2\td02\t1\n")
    assert set(load_beir(directory, "dev").queries) == {"q2"}
    with pytest.raises(FileNotFoundError):
        load_beir(directory, "no-such-split")


@pytest.mark.parametrize(
    ("spec", "method", "weights", "rrf_k"),
    [
        ("rrf", pb.FUSION_METHOD_RRF, (0.0, 0.0), 0),
        ("min_max:0.4:0.6", pb.FUSION_METHOD_MIN_MAX, (0.4, 0.6), 0),
        ("rrf:1:2:20", pb.FUSION_METHOD_RRF, (1.0, 2.0), 20),
        ("distribution:0:1", pb.FUSION_METHOD_DISTRIBUTION, (0.0, 1.0), 0),
    ],
)
def test_a_fusion_spec_sets_the_request_fields(
    spec: str, method: int, weights: tuple[float, float], rrf_k: int
) -> None:
    request = pb.SearchRequest(query="q")
    parse_fusion(spec).apply(request)
    assert request.fusion_method == method
    assert (request.dense_weight, request.keyword_weight) == pytest.approx(weights)
    assert request.rrf_k == rrf_k


def test_a_top_k_variant_asks_for_fewer_hits_with_the_default_fusion() -> None:
    request = pb.SearchRequest(query="q")
    variant = FusionVariant("", 10)
    variant.apply(request)
    assert request.top_k == 10 and request.fusion_method == pb.FUSION_METHOD_UNSPECIFIED
    assert variant.label == "hybrid top_k 10"
    assert parse_fusion("rrf:1:1:60").label == "hybrid rrf:1:1:60"
    assert FusionVariant("dbsf", 20).label == "hybrid dbsf top_k 20"
    full = pb.SearchRequest(query="q")
    parse_fusion("rrf:1:1:60").apply(full)
    assert full.top_k == TOP_K


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("borda", "METHOD one of rrf, min_max, distribution"),
        ("rrf:1", "METHOD[:DENSE_WEIGHT:KEYWORD_WEIGHT[:RRF_K]]"),
        ("rrf:1:1:60:9", "METHOD[:DENSE_WEIGHT:KEYWORD_WEIGHT[:RRF_K]]"),
        ("min_max:a:1", "must be numbers"),
        ("rrf:1:1:2.5", "RRF_K an integer"),
        ("rrf:-1:1", "weights must be >= 0"),
        ("rrf:1:1:0", "RRF_K >= 1"),
    ],
)
def test_a_bad_fusion_spec_says_what_is_expected(spec: str, reason: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_fusion(spec)
    assert reason in str(raised.value)
    assert repr(spec) in str(raised.value)


def _data() -> BeirData:
    return BeirData(
        "set", {"a": "", "b": "", "c": ""}, {"q": "", "r": ""}, {"q": {"a"}, "r": {"c"}}
    )


def test_score_is_ndcg_and_recall_over_the_judged_queries() -> None:
    result = score("dense", {"q": ["a", "b"], "r": ["b", "c"]}, _data(), 1.5)
    # q: relevant at rank 1 (1.0); r: at rank 2 (1 / log2(3)).
    assert result.ndcg == pytest.approx((1.0 + 1 / 1.584962500721156) / 2)
    assert result.recall == 1.0
    assert (result.label, result.seconds) == ("dense", 1.5)


def test_the_report_judges_dense_against_the_baseline_and_hybrid_against_both() -> None:
    report = EvalReport(_data(), "test", passages=5, ingest_s=2.0)
    report.scores = [
        ModeScore("dense", 0.70, 0.9, 1.0),
        ModeScore("keyword", 0.72, 0.9, 1.0),
        ModeScore("hybrid", 0.75, 0.95, 1.0),
    ]
    report.baseline = ModeScore("in-process exact dense (same passages)", 0.705, 0.9, 3.0)
    text = format_report(report, "pgvector")
    assert "set (test: 2 queries, 3 documents -> 5 passages), backend pgvector" in text
    assert "dense - in-process nDCG@10 = -0.0050  (must be within 0.01: ok)" in text
    assert "hybrid - max(dense, keyword) nDCG@10 = +0.0300  (must be > 0: ok)" in text
    report.scores[2] = ModeScore("hybrid", 0.71, 0.9, 1.0)
    report.baseline = ModeScore("in-process exact dense (same passages)", 0.75, 0.9, 3.0)
    text = format_report(report, "pgvector")
    assert "(must be within 0.01: FAIL)" in text
    assert "(must be > 0: FAIL)" in text


def test_fusion_study_bm25_matches_the_formula_by_hand() -> None:
    passages = ["red apple", "green apple apple pie", "blue sky"]
    [ranking] = bm25_rankings(passages, ["apple sky"], limit=10)
    # Lengths 2, 4, 2 (average 8/3); "apple" in 2 of 3 passages, "sky" in 1.
    average = 8 / 3

    def term(tf: int, length: int, df: int) -> float:
        norm = 1.2 * (1 - 0.75 + 0.75 * length / average)
        return bm25_idf(df, 3) * tf * 2.2 / (tf + norm)

    expected = {0: term(1, 2, 2), 1: term(2, 4, 2), 2: term(1, 2, 1)}
    assert [index for index, _ in ranking] == sorted(expected, key=lambda i: -expected[i])
    assert dict(ranking) == pytest.approx(expected)
    assert bm25_rankings(passages, ["apple sky"], limit=1) == [ranking[:1]]
    assert bm25_rankings(passages, ["nothing matches"], limit=10) == [[]]
