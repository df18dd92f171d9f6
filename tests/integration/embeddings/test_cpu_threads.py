"""The model process stays within the CPU threads it is given (issue 27): on Kubernetes the
embeddings pod has no CPU limit, so every runtime would otherwise size itself to the node's
cores; the Deployment passes its CPU request as RAGMESH_EMBEDDINGS__CPU_THREADS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ragmeshd.embeddings.runtimes import limit_cpu_threads, load_runtime, model_identity
from ragmeshd.models import packaged_model_path

pytestmark = pytest.mark.integration

# The folder of converted models every test server shares (tests/conftest.py).
CACHE_DIR = Path(os.environ["RAGMESH_EMBEDDINGS__RUNTIME_CACHE_DIR"])


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    limit_cpu_threads(1)
    try:
        yield
    finally:
        limit_cpu_threads(0)
        torch.set_num_threads(before)


def test_openvino_and_torch_stay_within_the_threads_given(
    one_thread: None, reference_model
) -> None:
    identity = f"all-MiniLM-L6-v2-{model_identity(packaged_model_path())}"
    runtime = load_runtime("openvino", reference_model, identity, "cpu", CACHE_DIR)
    assert runtime.threads == 1
    assert runtime.streams == 1
    assert torch.get_num_threads() == 1
