"""An older state directory is tightened: the folder 0700 (0711 for the embedded PostgreSQL's
own user), private folders 0700, their files 0600; symbolic links and other folders left
alone."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ragmeshd.runtime.private_files import secure_state_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_secure_state_dir_tightens_private_folders_and_their_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "keys" / "old").mkdir(parents=True)
    (state / "logs").mkdir()
    (state / "models").mkdir()
    key = state / "keys" / "admin.key"
    key.write_text("secret")
    nested = state / "keys" / "old" / "revoked.key"
    nested.write_text("old")
    log = state / "logs" / "search.log"
    log.write_text("{}")
    shared = state / "models" / "model.bin"
    shared.write_text("weights")
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    (state / "logs" / "link").symlink_to(outside)
    for path, value in [
        (state, 0o755), (state / "keys", 0o755), (state / "keys" / "old", 0o775),
        (key, 0o644), (nested, 0o640), (log, 0o600), (shared, 0o644), (outside, 0o644),
    ]:  # fmt: skip
        path.chmod(value)

    secure_state_dir(state)

    assert mode(state) == 0o700
    assert mode(state / "keys") == mode(state / "keys" / "old") == 0o700
    assert mode(key) == mode(nested) == mode(log) == 0o600
    # Not a private folder, and not through a link.
    assert mode(shared) == 0o644
    assert mode(outside) == 0o644

    secure_state_dir(state, traversable=True)
    assert mode(state) == 0o711


def test_secure_state_dir_makes_a_missing_folder(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b"
    secure_state_dir(state)
    assert state.is_dir() and mode(state) == 0o700
    assert not os.listdir(state)
