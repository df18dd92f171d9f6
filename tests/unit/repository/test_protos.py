"""The protos are lint-clean, formatted, and the committed generated code is current."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO_ROOT

VENV_BIN = Path(sys.executable).parent


def buf(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    # buf runs the generators as `python -m ...`: this interpreter's directory comes first.
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": f"{REPO_ROOT / 'services'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    return subprocess.run(
        [str(VENV_BIN / "buf"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_buf_lint_is_clean() -> None:
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_format_has_nothing_to_change() -> None:
    result = buf("format", "--diff", "--exit-code")
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_is_current(tmp_path: Path) -> None:
    """Regenerate into a scratch copy of the sources and diff against gen/python."""
    for name in ("buf.yaml", "buf.gen.yaml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(REPO_ROOT / "protos", tmp_path / "protos")
    shutil.copytree(REPO_ROOT / "third_party", tmp_path / "third_party")
    # The plugins (`python -m ragmeshd.codegen.grpc_python`, `ragmeshd.codegen.apidoc`) are this
    # checkout's own modules, found through PYTHONPATH, so coverage measures them where they live.
    result = buf("generate", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    fresh, committed = tmp_path / "gen" / "python", REPO_ROOT / "gen" / "python"
    stale = _differences(filecmp.dircmp(fresh, committed, ignore=["__pycache__"]))
    assert not stale, f"gen/python is stale, run `make generate`: {stale}"
    # docs/api/ is generated from the same protos' comments (ragmeshd/codegen/apidoc.py).
    stale_docs = _differences(filecmp.dircmp(tmp_path / "docs" / "api", REPO_ROOT / "docs" / "api"))
    assert not stale_docs, f"docs/api is stale, run `make generate`: {stale_docs}"


def _differences(comparison: filecmp.dircmp[str]) -> list[str]:
    found = [
        *(f"only in fresh: {name}" for name in comparison.left_only),
        *(f"only in committed: {name}" for name in comparison.right_only),
        *(f"differs: {name}" for name in comparison.diff_files),
    ]
    for sub in comparison.subdirs.values():
        found.extend(_differences(sub))
    return found


def test_descriptor_set_is_current(tmp_path: Path) -> None:
    """Envoy's transcoder reads gen/descriptors/ragmesh.binpb: it must match the protos."""
    fresh = tmp_path / "ragmesh.binpb"
    result = buf("build", "--exclude-source-info", "-o", str(fresh))
    assert result.returncode == 0, result.stdout + result.stderr
    committed = REPO_ROOT / "gen" / "descriptors" / "ragmesh.binpb"
    assert fresh.read_bytes() == committed.read_bytes(), (
        "gen/descriptors/ragmesh.binpb is stale, run `make generate`"
    )
