"""Keeping the state directory private: 0700 folders, 0600 files, an owner-only umask.

Everything under STATE_DIR is either secret (keys, private keys, the database) or tells an
attacker about the mesh (logs with request details, configs). `ragmesh` sets the umask 077
for itself and every process it starts, so whatever they create is owner-only; and
`secure_state_dir` tightens a state directory made by an older version.

One exception: as root, the embedded PostgreSQL runs as its own user (initdb refuses root),
which must be able to pass through STATE_DIR to its data folder, so STATE_DIR is then 0711
(others may traverse it but not list or read it; what lies inside stays 0700/0600).
"""

from __future__ import annotations

import ctypes
import os
import stat
from pathlib import Path

OWNER_ONLY_UMASK = 0o077
# Folders whose every file is owner-only (the database folder has its own owner and modes).
PRIVATE_FOLDERS = ("keys", "logs", "certs", "envoy", "run")


def restrict_umask() -> None:
    """New files and folders of this process and its children: owner-only."""
    os.umask(OWNER_ONLY_UMASK)


def secure_state_dir(state_dir: Path, *, traversable: bool = False) -> None:
    """Make `state_dir` 0700 (0711 when `traversable`), its private folders 0700 and every
    file in them 0600."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state_dir.chmod(0o711 if traversable else 0o700)
    for name in PRIVATE_FOLDERS:
        folder = state_dir / name
        if not folder.is_dir():
            continue
        for path in (folder, *folder.rglob("*")):
            if path.is_symlink():
                continue
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_dir() and mode != 0o700:
                path.chmod(0o700)
            elif path.is_file() and mode & 0o077:
                path.chmod(0o600)


# prctl(2) option: whether the process may be dumped or inspected by its owner's other processes.
_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3


def forbid_inspection() -> bool:
    """Make this process non-dumpable (Linux): other processes of the same user, such as a
    compromised server of this mesh, can no longer read its /proc/<pid>/environ or memory
    (where the CA passphrase lived), nor attach a debugger. For the processes that hold the
    CA key's passphrase: `ragmesh up` and `ragmesh certs`. False where it is not supported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def inspectable() -> bool:
    """Whether this process can still be dumped or inspected (see forbid_inspection)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))
