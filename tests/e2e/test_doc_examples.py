"""Every example in README.md and docs/ that calls the mesh runs, as pasted, against a real one.

Fenced `sh` blocks run in one bash session (README first, so its `mesh` and `meshcurl`
functions serve the other pages), and `python` blocks with the venv's interpreter, from a
folder laid out like the repository after `make up` (`.ragmesh/`, `.venv/`), with the mesh's
endpoint and admin address in place of 127.0.0.1:8443 and 127.0.0.1:9901. Commands that
start or measure things for minutes (`make up`, `ragmesh up`, `ragmesh bench`, `ragmesh
eval`) are fenced `console` and not run.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

DEFAULT_ENDPOINT = "127.0.0.1:8443"
DEFAULT_ADMIN = "127.0.0.1:9901"
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
# A line that calls the mesh: such a line must be in a block that the suite runs.
_CALL = re.compile(r"^\s*(grpcurl|mesh|meshcurl|curl)\s|openai\.OpenAI\(", re.M)


def doc_files() -> list[Path]:
    # Our own pages only: not the generated API reference, nor the READMEs of the npm packages
    # the TypeScript client example installs (docs/clients/typescript/node_modules).
    docs = sorted(
        p
        for p in (REPO_ROOT / "docs").rglob("*.md")
        if "api" not in p.parent.parts and "node_modules" not in p.parts
    )
    return [REPO_ROOT / "README.md", *docs]


def blocks(path: Path) -> list[tuple[str, int, str]]:
    text = path.read_text()
    return [
        (match.group(1), text.count("\n", 0, match.start()) + 1, match.group(2))
        for match in _FENCE.finditer(text)
    ]


def commands(code: str) -> str:
    """What a block asks the reader to run: in a transcript (commands marked `$ `) only
    those lines, the rest being output; in any other block all of it."""
    prompted = [line[2:] for line in code.splitlines() if line.startswith("$ ")]
    return "\n".join(prompted) if prompted else code


def test_every_block_that_calls_the_mesh_is_run() -> None:
    hidden = [
        f"{path.relative_to(REPO_ROOT)}:{line}"
        for path in doc_files()
        for language, line, code in blocks(path)
        if language not in ("sh", "python") and _CALL.search(commands(code))
    ]
    assert not hidden, f"fence these `sh` or `python` so the suite runs them: {hidden}"


def test_the_examples_work_against_a_real_mesh(mesh: Mesh, tmp_path: Path) -> None:
    (tmp_path / ".ragmesh").symlink_to(mesh.state_dir)
    (tmp_path / ".venv").symlink_to(REPO_ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGMESH_")}
    env["PATH"] = f"{REPO_ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    script = ["set -euo pipefail"]
    python_blocks = []
    for path in doc_files():
        for language, line, code in blocks(path):
            where = f"{path.relative_to(REPO_ROOT)}:{line}"
            code = code.replace(DEFAULT_ENDPOINT, mesh.endpoint)
            code = code.replace(DEFAULT_ADMIN, mesh.admin)
            if language == "sh":
                script += [f"echo '### {where}' >&2", code]
            elif language == "python":
                python_blocks.append((where, code))
    assert len(script) > 10 and python_blocks
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{result.stderr[-3000:]}\n{result.stdout[-2000:]}"
    for where, code in python_blocks:
        ran = subprocess.run(
            [str(REPO_ROOT / ".venv" / "bin" / "python"), "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert ran.returncode == 0, f"{where}:\n{ran.stderr[-3000:]}"
