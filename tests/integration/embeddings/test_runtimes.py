"""The converted runtimes match torch fp32 (issue 11): every runtime offered as a default
gives vectors within cosine 0.9999 of torch's on a fixed text set, token counts and
truncation do not depend on the runtime, and a conversion is done once and reused."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ragmeshd.embeddings.model import Encoder
from ragmeshd.embeddings.runtime_choice import MIN_PARITY_COSINE, PARITY_TEXTS, min_cosine
from ragmeshd.embeddings.runtimes import converted_model_dir, load_runtime, model_identity
from ragmeshd.models import packaged_model_path

pytestmark = pytest.mark.integration

# The folder of converted models every test server shares (tests/conftest.py).
CACHE_DIR = Path(os.environ["RAGMESH_EMBEDDINGS__RUNTIME_CACHE_DIR"])


@pytest.fixture(scope="module")
def identity() -> str:
    return f"all-MiniLM-L6-v2-{model_identity(packaged_model_path())}"


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_runtime_matches_torch_fp32(runtime: str, identity: str, reference_model) -> None:
    reference = reference_model.encode(list(PARITY_TEXTS), convert_to_numpy=True)
    converted = load_runtime(runtime, reference_model, identity, "cpu", CACHE_DIR)
    vectors = converted.embed(list(PARITY_TEXTS))
    assert vectors.shape == reference.shape
    assert min_cosine(reference, vectors) >= MIN_PARITY_COSINE


def test_openvino_runs_a_batchs_slices_at_once_in_order(identity: str, reference_model) -> None:
    """Slices of one batch run on OpenVINO's streams together (a slice cut in halves when
    there are fewer slices than streams); each slice's vectors come back where it was."""
    runtime = load_runtime("openvino", reference_model, identity, "cpu", CACHE_DIR)
    assert runtime.streams >= 1
    texts = list(PARITY_TEXTS)
    slices = [texts[:1], texts[1:9], texts[9:]]
    vectors = runtime.embed_slices(slices)
    assert [len(part) for part in vectors] == [len(part) for part in slices]
    reference = reference_model.encode(texts, convert_to_numpy=True)
    assert min_cosine(reference, np.concatenate(vectors)) >= MIN_PARITY_COSINE
    (alone,) = runtime.embed_slices([texts[3:4]])
    assert min_cosine(reference[3:4], alone) >= MIN_PARITY_COSINE


def test_encoder_on_openvino_keeps_tokens_and_truncation(reference_model) -> None:
    encoder = Encoder("", "cpu", 32.0, "openvino", str(CACHE_DIR))
    assert encoder.runtime.startswith("openvino-")
    texts = [*PARITY_TEXTS, "token " * 600]
    results = encoder.encode(texts)
    counts = [
        len(ids) for ids in reference_model.tokenizer(texts, add_special_tokens=True)["input_ids"]
    ]
    window = reference_model.max_seq_length
    assert [result.token_count for result in results] == counts
    assert [result.truncated for result in results] == [count > window for count in counts]
    reference = reference_model.encode(texts, convert_to_numpy=True)
    assert min_cosine(reference, np.stack([result.vector for result in results])) >= 0.9999

    # The conversion was kept: asking again reuses the same files.
    directory, _ = converted_model_dir("openvino", reference_model, encoder.identity, CACHE_DIR)
    written = (directory / "manifest.json").stat().st_mtime_ns
    converted_model_dir("openvino", reference_model, encoder.identity, CACHE_DIR)
    assert (directory / "manifest.json").stat().st_mtime_ns == written
    assert (directory / "model.xml").exists() and (directory / "model.bin").exists()
