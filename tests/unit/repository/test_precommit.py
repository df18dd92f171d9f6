"""The pre-commit hooks work offline: local hooks running tools installed in .venv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import REPO_ROOT


def test_every_hook_is_local_and_runs_a_venv_tool() -> None:
    config = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert all(repo["repo"] == "local" for repo in config["repos"])
    assert {h["id"] for h in hooks} >= {"ruff", "ruff-format", "mypy", "buf-lint", "bandit"}
    for hook in hooks:
        assert hook["language"] == "system", hook["id"]
        tool = REPO_ROOT / hook["entry"].split()[0]
        assert tool.parent == REPO_ROOT / ".venv" / "bin" and tool.exists(), hook["id"]
    assert config["exclude"].startswith("^(gen|")


def test_pre_commit_accepts_the_config() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "pre-commit"), "validate-config",
         ".pre-commit-config.yaml"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
