"""`ragmesh eval --target` against the shared mesh, through Envoy with the state folder's
client certificate (mutual TLS) and the admin key, and the offline fusion study, on a tiny
BEIR-format set (tests/beir_tiny.py): the service's numbers and the offline ones agree."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragmeshd.evaluation.fusion_study import VARIANTS
from tests.beir_tiny import CORPUS, JUDGED, write_tiny_beir
from tests.helpers import REPO_ROOT, ragmesh_command
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

BASELINE = "in-process exact dense (same passages)"


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _table(output: str) -> dict[str, tuple[float, float]]:
    """The report's rows: label → (nDCG@10, Recall@100)."""
    rows = {}
    for line in output.splitlines():
        match = re.fullmatch(r"(\S.*?)\s+(\d\.\d{4})\s+(\d\.\d{4})\s+\d+\.\d", line)
        if match:
            rows[match[1]] = (float(match[2]), float(match[3]))
    return rows


# Long (`make test-long`): every mode and fusion beside the offline study. In the suite,
# test_eval_json_is_one_document_on_stdout runs eval on the same data set.
@pytest.mark.long
def test_eval_and_the_fusion_study_agree_on_a_tiny_beir_set(mesh: Mesh, tmp_path: Path) -> None:
    beir = write_tiny_beir(tmp_path / "tiny")
    output = _run(
        ragmesh_command(
            "--state-dir", str(mesh.state_dir), "eval", "--beir", str(beir), "--split", "test",
            "--target", mesh.endpoint, "--collection", "eval-tiny",
            "--fusion", "rrf:1:1:60", "--fusion", "min_max:0.5:0.5",
        ),
        mesh.env,
    )  # fmt: skip
    assert f"evaluating tiny: {len(CORPUS)} documents, {len(JUDGED)} queries" in output
    # Every abstract is one passage.
    assert f"-> {len(CORPUS)} passages), backend (given target)" in output
    rows = _table(output)
    assert set(rows) == {
        "dense", "keyword", "hybrid", "hybrid rrf:1:1:60", "hybrid min_max:0.5:0.5", BASELINE
    }  # fmt: skip
    # Each query's words occur only in its relevant documents: BM25 ranks them first.
    assert rows["keyword"][0] == 1.0
    # Twelve documents: top_k 100 returns every one that matches, relevant ones included.
    assert all(recall == 1.0 for _, recall in rows.values()), rows
    # The service's dense search matches exact search with the same model.
    assert "(must be within 0.01: ok)" in output, output

    vectors = tmp_path / "vectors.npy"
    study = _run(
        [
            sys.executable, "-m", "ragmeshd.evaluation.fusion_study",
            "--beir", str(beir), "--split", "test", "--vectors", str(vectors),
        ]
    )  # fmt: skip
    assert f"tiny test: {len(JUDGED)} queries, {len(CORPUS)} passages" in study
    offline = {
        match[1]: float(match[2])
        for match in re.finditer(r"^(\S.*?)\s+(\d\.\d{4})$", study, re.MULTILINE)
    }
    assert len(offline) == 2 + len(VARIANTS), study
    # The same exact dense search and the same BM25 as the service's keyword mode.
    assert offline["dense (exact)"] == rows[BASELINE][0]
    assert offline["keyword (BM25)"] == rows["keyword"][0]
    assert offline["hybrid rrf 1/1 k=60"] == pytest.approx(rows["hybrid rrf:1:1:60"][0], abs=0.01)
    assert np.load(vectors).shape == (len(CORPUS), 384)


def test_eval_json_is_one_document_on_stdout(mesh: Mesh, tmp_path: Path) -> None:
    beir = write_tiny_beir(tmp_path / "tiny")
    output = _run(
        ragmesh_command(
            "--state-dir", str(mesh.state_dir), "eval", "--beir", str(beir), "--split", "test",
            "--target", mesh.endpoint, "--collection", "eval-tiny-json", "--mode", "keyword",
            "--hybrid-top-k", "5", "--no-baseline", "--json",
        ),
        mesh.env,
    )  # fmt: skip
    document = json.loads(output)
    assert document["passages"] == len(CORPUS)
    assert [score["label"] for score in document["scores"]] == ["keyword", "hybrid top_k 5"]
    assert document["scores"][0]["ndcg"] == 1.0
    # Five hits of twelve documents: nDCG@10 is still defined, Recall@100 counts five.
    assert 0 < document["scores"][1]["ndcg"] <= 1


def test_eval_folds_cross_validates_the_fusion(mesh: Mesh, tmp_path: Path) -> None:
    beir = write_tiny_beir(tmp_path / "tiny")
    output = _run(
        ragmesh_command(
            "--state-dir", str(mesh.state_dir), "eval", "--beir", str(beir), "--split", "test",
            "--target", mesh.endpoint, "--collection", "eval-tiny-folds", "--mode", "hybrid",
            "--no-baseline", "--folds", "5", "--json",
        ),
        mesh.env,
    )  # fmt: skip
    document = json.loads(output)
    labels = [score["label"] for score in document["scores"]]
    assert labels[0] == "hybrid" and "hybrid dbsf:0.5:0.5" in labels
    validation = document["cross_validation"]
    folds = validation["folds"]
    assert len(folds) == 5 and sum(fold["queries"] for fold in folds) == len(JUDGED)
    assert all(fold["chosen"] in labels for fold in folds)
    low, high = validation["gain_interval"]
    assert low <= validation["gain"] <= high
    assert 0 <= validation["mean_ndcg"] <= 1
