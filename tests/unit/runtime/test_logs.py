"""Server logging: a crash inside a C extension leaves a Python stack in the stderr log."""

from __future__ import annotations

import subprocess
import sys


def test_a_segfault_in_a_server_process_leaves_its_python_stack_on_stderr() -> None:
    crash = (
        "from ragmeshd.runtime.logs import configure_logging\n"
        "configure_logging('coordinator', 'INFO')\n"
        "import ctypes\n"
        "def export_interactions():\n"
        "    ctypes.string_at(0)\n"
        "export_interactions()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", crash], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "Segmentation fault" in result.stderr
    assert "in export_interactions" in result.stderr
