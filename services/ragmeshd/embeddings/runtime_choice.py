"""Choosing the model's runtime: parity with torch fp32 first, then speed on this machine.

Every converted runtime is checked at start against torch fp32 on a fixed set of texts
(short, long and truncated, non-Latin, digits): a runtime whose vectors are not within
MIN_PARITY_COSINE of torch's on every text is refused. `auto` on a CPU then times each
runtime that passed on one length-sorted batch of 32 and takes the fastest; the choice is
kept beside the converted models so later starts skip the timing. On a GPU, `auto` is torch
in fp16.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragmeshd.embeddings.runtimes import RUNTIMES, Runtime, TorchRuntime, load_runtime

_log = logging.getLogger("ragmesh.embeddings.runtime")

# Every text's vector must be at least this close (cosine) to torch fp32's.
MIN_PARITY_COSINE = 0.9999

_SENTENCES = (
    "The mitochondria is the powerhouse of the cell.",
    "Envoy retries idempotent gRPC calls on another host when one fails.",
    "PostgreSQL stores 384-dimensional vectors with the pgvector extension (HNSW index).",
    "a",
    "Ünïcødé, emoji 🚀 and ÇÅPÎTÅLS still embed fine.",
    "日本語の文章も埋め込みできます。",
    "Вектор каждого текста сравнивается с результатом torch.",  # noqa: RUF001
    "0.5 mg/kg of compound X-17 reduced tumour volume by 42% (p < 0.001, n = 118).",
    "def encode(texts): return model.encode(texts, batch_size=64)",
    "Vitamin D supplementation does not prevent fractures in community-dwelling adults.",
    "What does a retrieval mesh do with a query that matches no document at all?",
    "   leading and trailing spaces   ",
)
# Long texts: a full window and one far past it (truncated to the model's 256 tokens).
PARITY_TEXTS = (
    *_SENTENCES,
    " ".join(_SENTENCES[:3] * 4),
    " ".join(_SENTENCES * 12),
)


class ParityError(RuntimeError):
    """A converted runtime's vectors are not close enough to torch fp32's."""


def min_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The smallest cosine similarity between corresponding rows."""
    dots = np.sum(reference * candidate, axis=1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    return float(np.min(dots / norms))


def check_parity(runtime: Runtime, reference: np.ndarray) -> float:
    """The runtime's worst cosine to the reference on PARITY_TEXTS; ParityError if too low."""
    cosine = min_cosine(reference, runtime.embed(list(PARITY_TEXTS)))
    if cosine < MIN_PARITY_COSINE:
        raise ParityError(
            f"the {runtime.name} runtime's vectors differ from torch fp32's (worst cosine"
            f" {cosine:.6f} < {MIN_PARITY_COSINE}); use runtime = torch"
        )
    return cosine


def _texts_per_s(runtime: Runtime, texts: list[str], rounds: int = 2) -> float:
    runtime.embed(texts[:8])  # warm-up: first calls allocate
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        runtime.embed(texts)
        best = min(best, time.perf_counter() - started)
    return len(texts) / best


def _timing_texts() -> list[str]:
    """32 texts of 8 to 60 words, sorted by length as the server's slices are."""
    words = " ".join(_SENTENCES).split()
    texts = [" ".join(words[i % 20 : i % 20 + 8 + (i * 5) % 53]) for i in range(32)]
    return sorted(texts, key=len)


def choose_runtime(
    setting: str, model: Any, identity: str, device: str, cache_dir: Path
) -> tuple[Runtime, dict[str, Any]]:
    """The runtime to serve with, and what was measured to choose it (for the log)."""
    torch_runtime = TorchRuntime(model, device)
    if setting == "torch" or (setting == "auto" and device != "cpu"):
        return torch_runtime, {}
    reference = torch_runtime.embed(list(PARITY_TEXTS))
    if setting != "auto":
        runtime = load_runtime(setting, model, identity, device, cache_dir)
        return runtime, {"min_cosine": check_parity(runtime, reference)}

    choice_file = cache_dir / identity / "auto-choice.json"
    if choice_file.exists():
        cached = json.loads(choice_file.read_text())
        if cached["chosen"] == "torch":
            return torch_runtime, cached
        runtime = load_runtime(cached["chosen"], model, identity, device, cache_dir)
        try:
            check_parity(runtime, reference)
            return runtime, cached
        except ParityError as exc:  # e.g. a changed converter: choose again
            _log.warning("cached runtime choice fails parity", extra={"error": str(exc)})

    candidates: dict[str, Runtime] = {"torch": torch_runtime}
    report: dict[str, Any] = {"min_cosine": {}, "texts_per_s": {}, "refused": {}}
    for name in RUNTIMES:
        if name == "torch":
            continue
        try:
            runtime = load_runtime(name, model, identity, device, cache_dir)
            report["min_cosine"][name] = check_parity(runtime, reference)
            candidates[name] = runtime
        except Exception as exc:  # a runtime that cannot convert or match is not offered
            report["refused"][name] = f"{type(exc).__name__}: {exc}"
    texts = _timing_texts()
    for name, runtime in candidates.items():
        report["texts_per_s"][name] = round(_texts_per_s(runtime, texts), 1)
    chosen = max(report["texts_per_s"], key=report["texts_per_s"].get)
    report["chosen"] = chosen
    choice_file.parent.mkdir(parents=True, exist_ok=True)
    partial = choice_file.with_name(f".{choice_file.name}.{os.getpid()}")
    partial.write_text(json.dumps(report, indent=2))
    partial.replace(choice_file)  # atomic: a replica starting now reads all of it or none
    return candidates[chosen], report
