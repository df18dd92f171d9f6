"""The CLI convention (docs/cli.md), command by command where it needs no running mesh: exit
codes, errors on stderr, settings errors as one line per key, the global --state-dir,
durations and secret files."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import pytest

from ragmeshd.commands.convention import (
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CommandError,
    parse_duration,
    read_secret_file,
)
from tests.helpers import REPO_ROOT, ragmesh_command


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ragmesh_command(*args),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("24h", 86400.0), ("30d", 2592000.0)],
)
def test_one_duration_syntax(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "s", "5 minutes", "-1s", "1w"])
def test_a_bad_duration_names_the_accepted_forms(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="500ms, 30s, 5m, 24h, 30d"):
        parse_duration(text)


def test_secrets_come_from_files(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("rmk_secret\n")
    assert read_secret_file(key, "an API key") == "rmk_secret"
    key.write_text("")
    with pytest.raises(CommandError, match="empty") as empty:
        read_secret_file(key, "an API key")
    assert empty.value.exit_code == EXIT_USAGE
    with pytest.raises(CommandError, match="cannot read an API key"):
        read_secret_file(tmp_path / "missing", "an API key")


def test_a_bad_setting_is_one_line_per_key_on_stderr_with_exit_2(tmp_path: Path) -> None:
    result = run(
        "--state-dir",
        str(tmp_path),
        "status",
        env={"RAGMESH_EMBEDDINGS__MAX_BATCH_TEXTS": "0", "RAGMESH_LOG_LEVEL": "LOUD"},
    )
    assert result.returncode == EXIT_USAGE
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "embeddings.max_batch_texts (RAGMESH_EMBEDDINGS__MAX_BATCH_TEXTS):" in result.stderr
    assert "log_level (RAGMESH_LOG_LEVEL):" in result.stderr


def test_status_without_a_mesh_is_unreachable_on_stderr(tmp_path: Path) -> None:
    result = run("--state-dir", str(tmp_path), "status", "--json")
    assert result.returncode == EXIT_UNREACHABLE
    assert result.stdout == ""
    assert str(tmp_path / "mesh.json") in result.stderr


def test_a_bad_flag_is_a_usage_error() -> None:
    result = run("status", "--no-such-flag")
    assert result.returncode == EXIT_USAGE
    assert "unrecognized arguments" in result.stderr


def test_down_without_a_mesh_says_so_and_succeeds(tmp_path: Path) -> None:
    result = run("--state-dir", str(tmp_path), "down")
    assert result.returncode == 0
    assert "no mesh runs" in result.stderr


def test_keys_list_json_is_one_document(tmp_path: Path) -> None:
    assert (
        run(
            "--state-dir", str(tmp_path), "keys", "create", "reader", "--scopes", "search.read"
        ).returncode
        == 0
    )
    result = run("--state-dir", str(tmp_path), "keys", "list", "--json")
    assert result.returncode == 0, result.stderr
    keys = json.loads(result.stdout)["keys"]
    assert [key["name"] for key in keys] == ["reader"]
    assert keys[0]["scopes"] == ["search.read"]
