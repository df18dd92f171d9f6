"""Fixtures shared by every test depth."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The model and tokenizer load from local directories only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def reference_model():  # type: ignore[no-untyped-def]
    """The packaged model loaded in-process, the reference the server is compared with."""
    from sentence_transformers import SentenceTransformer

    from services.embeddings.model import packaged_model_path

    return SentenceTransformer(str(packaged_model_path()), device="cpu")


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("ragmesh")
