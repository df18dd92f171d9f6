"""The embedded PostgreSQL's socket folder is never a predictable shared /tmp path: a state
folder too long for a socket path gets a folder in this user's private /tmp/ragmesh-<uid>, and
a look-alike made by someone else is refused (issue 23)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from ragmeshd.postgres import embedded
from ragmeshd.postgres.embedded import EmbeddedPostgres, EmbeddedPostgresError


def test_a_long_state_folder_gets_a_private_socket_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    deep = tmp_path / ("state-" + "x" * 120)
    socket_dir = EmbeddedPostgres(state_dir=deep).socket_dir
    private = tmp_path / f"ragmesh-{os.geteuid()}"
    assert socket_dir.parent == private
    info = private.lstat()
    assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
    assert info.st_mode & 0o077 in (0, 0o011)  # 0700, or 0711 as root: nobody lists it


def test_a_look_alike_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    (tmp_path / f"ragmesh-{os.geteuid()}").symlink_to(elsewhere)
    with pytest.raises(EmbeddedPostgresError, match="not a private folder"):
        embedded.private_runtime_dir()


def test_a_folder_others_may_write_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    shared = tmp_path / f"ragmesh-{os.geteuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(EmbeddedPostgresError, match="not a private folder"):
        embedded.private_runtime_dir()
