"""`ragmesh profile` on the shared mesh: every process of mesh.json measured idle and under
the mixed load, and every kind of call answered (the figures themselves are printed, never
asserted)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.helpers import REPO_ROOT, ragmesh_command
from tests.mesh import Mesh

pytestmark = pytest.mark.e2e

FIGURES = r"RSS mean +\d+ MiB  max +\d+ MiB   CPU mean +\d+\.\d\d  p95 +\d+\.\d\d cores"


def test_profile_samples_every_process_idle_and_under_load(mesh: Mesh) -> None:
    result = subprocess.run(
        ragmesh_command("profile", "--seconds", "2", "--concurrency", "1"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={**os.environ, **mesh.env},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    rates = dict(re.findall(r"(Embed\(8 texts\)|Search|AugmentQuery) (\d+\.\d)/s", lines[0]))
    assert set(rates) == {"Embed(8 texts)", "Search", "AugmentQuery"}, lines[0]
    assert all(float(rate) > 0 for rate in rates.values()), lines[0]
    for name in mesh.state.pids:
        [idle] = [i for i, line in enumerate(lines) if line.startswith(f"{name} ")]
        assert re.search(f"idle +{FIGURES}", lines[idle]), lines[idle]
        assert re.search(f"loaded +{FIGURES}", lines[idle + 1]), lines[idle + 1]
