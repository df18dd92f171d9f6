"""Loading the sentence-transformers model and running it on one batch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragmeshd import defaults
from ragmeshd.embeddings.slicing import plan_slices
from ragmeshd.models import packaged_model_path, resolve_device

_log = logging.getLogger("ragmesh.embeddings.model")


@dataclass(frozen=True)
class EncodedText:
    """The model's output for one text."""

    vector: np.ndarray
    token_count: int
    truncated: bool


class Encoder:
    """A loaded model; `encode` is called from the batcher's single worker thread.

    `runtime` is where the forward pass runs (torch, onnx, openvino or auto:
    ragmeshd/embeddings/runtime_choice.py); converted models are kept in `runtime_cache_dir`.
    """

    def __init__(
        self,
        model_path: str,
        device: str,
        slice_overhead_tokens: float,
        runtime: str = "torch",
        runtime_cache_dir: str = "",
    ) -> None:
        from sentence_transformers import SentenceTransformer

        from ragmeshd.embeddings.runtime_choice import choose_runtime
        from ragmeshd.embeddings.runtimes import model_identity

        path = Path(model_path) if model_path else packaged_model_path()
        if not path.is_dir():
            raise FileNotFoundError(f"model directory {path} does not exist")
        self.device = resolve_device(device)
        # A batch runs as length-sorted slices (ragmeshd/embeddings/slicing.py): one forward
        # pass costs about this many tokens of work on top of its padded tokens.
        self.slice_overhead_tokens = slice_overhead_tokens
        self._model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        self._tokenizer = self._model.tokenizer
        self.name = _model_name(path)
        dimensions = self._model.get_embedding_dimension()
        if not dimensions:
            raise RuntimeError(f"model at {path} does not report its embedding dimension")
        self.dimensions = int(dimensions)
        window = self._model.max_seq_length
        if window is None:
            raise RuntimeError(f"model at {path} does not report its token window")
        self.max_sequence_length = int(window)
        # The model's name and a digest of its files: converted models and cached vectors
        # are kept under it, so a changed model never meets an old one's.
        self.identity = f"{self.name}-{model_identity(path)}"
        cache_dir = Path(runtime_cache_dir or Path(defaults.STATE_DIR) / "models")
        self._runtime, report = choose_runtime(
            runtime, self._model, self.identity, self.device, cache_dir
        )
        self.runtime = self._runtime.name
        _log.info("model runtime", extra={"runtime": self.runtime, "choice": report})

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text, special tokens included, before any truncation."""
        encoded = self._tokenizer(texts, add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def encode(self, texts: list[str]) -> list[EncodedText]:
        """Embed one batch; texts longer than the window are truncated by the model."""
        token_counts = self.count_tokens(texts)
        lengths = [min(count, self.max_sequence_length) for count in token_counts]
        vectors: list[np.ndarray] = [np.empty(0)] * len(texts)
        plan = plan_slices(lengths, self.slice_overhead_tokens)
        slices = [[texts[index] for index in indices] for indices in plan]
        for indices, encoded in zip(plan, self._runtime.embed_slices(slices), strict=True):
            for index, vector in zip(indices, encoded, strict=True):
                vectors[index] = vector
        return [
            EncodedText(vector, count, count > self.max_sequence_length)
            for vector, count in zip(vectors, token_counts, strict=True)
        ]

    def self_test(self) -> None:
        """Encode one text and check the result, so a broken model fails at start-up."""
        (result,) = self.encode(["ragmesh start-up check"])
        if result.vector.shape != (self.dimensions,) or not np.all(np.isfinite(result.vector)):
            raise RuntimeError("the model's test encode returned an unusable vector")


def _model_name(path: Path) -> str:
    # The packaged model's directory is just "model"; name it as the world knows it.
    if path == packaged_model_path():
        return "all-MiniLM-L6-v2"
    return path.name
