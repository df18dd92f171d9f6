"""The client examples of docs/clients.md run, as shipped, against the shared mesh: the Python
one with the generated stubs and the TypeScript one with @grpc/grpc-js from npm, both over
mutual TLS with the key read from the state folder's file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

EXAMPLES = REPO_ROOT / "docs" / "clients"
TYPESCRIPT = EXAMPLES / "typescript"
TEXTS = ["a passage about retrieval", "another one"]


def typescript_command() -> list[str]:
    """`node dist/embed.js`, after installing the pinned packages (package-lock.json; `make
    test-tools` does the same) and compiling embed.ts."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed: `make test-tools` installs Debian's"
    if not (TYPESCRIPT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=TYPESCRIPT, check=True, timeout=600
        )
    tsc = TYPESCRIPT / "node_modules" / ".bin" / "tsc"
    subprocess.run([str(tsc), "-p", "."], cwd=TYPESCRIPT, check=True, timeout=300)
    return [node, str(TYPESCRIPT / "dist" / "embed.js")]


def python_command() -> list[str]:
    return [sys.executable, str(EXAMPLES / "python" / "embed.py")]


def run_example(
    command: list[str], target: str, state_dir: Path
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGMESH_")}
    env["PYTHONPATH"] = str(REPO_ROOT / "gen" / "python")
    return subprocess.run(
        [*command, target, str(state_dir), *TEXTS],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module", params=["python", "typescript"])
def example(request: pytest.FixtureRequest) -> list[str]:
    return python_command() if request.param == "python" else typescript_command()


def test_the_example_embeds_through_envoy_over_mutual_tls(example: list[str], mesh: Mesh) -> None:
    ran = run_example(example, mesh.endpoint, mesh.state_dir)
    assert ran.returncode == 0, ran.stderr
    lines = [json.loads(line) for line in ran.stdout.splitlines()]
    assert [line["text"] for line in lines] == TEXTS
    for line in lines:
        assert line["dimensions"] == 384 and line["model"]
        assert line["tokens"] > 0 and len(line["head"]) == 3


def test_the_example_reports_a_refused_key(example: list[str], mesh: Mesh, tmp_path: Path) -> None:
    """Same certificates, a key the mesh does not know: the call is refused, the example
    exits 1 and names the status."""
    (tmp_path / "certs").symlink_to(mesh.certs)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "admin.key").write_text("rmk_not-a-key\n")
    ran = run_example(example, mesh.endpoint, tmp_path)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "UNAUTHENTICATED" in ran.stderr
