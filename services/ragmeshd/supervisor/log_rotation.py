"""Logs rotated by size (issue 23): a mesh's logs never fill the disk.

Every child writes its log files itself, opened for appending, so `ragmesh up` rotates them as
logrotate's copytruncate does: a file over `max_bytes` is copied to NAME.1 (NAME.1 to NAME.2
and so on, `keep` copies) and truncated in place; the child's next write lands at the new end
of the file. A line being written during the copy may be split between the two files; none is
lost. STATE_DIR/logs/ holds every child's log, its stderr log, up.log and audit.log.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

_log = logging.getLogger("ragmesh.supervisor")


def rotate_if_large(path: Path, max_bytes: int, keep: int) -> bool:
    """Rotate `path` when it is over `max_bytes`; whether it did."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for index in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{index + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with path.open("r+b") as handle:
        handle.truncate(0)
    _log.info("log rotated", extra={"log": str(path), "max_bytes": max_bytes, "keep": keep})
    return True


def rotate_folder(folder: Path, max_bytes: int, keep: int) -> int:
    """Rotate every *.log file in `folder` that is over `max_bytes`; how many were."""
    return sum(rotate_if_large(path, max_bytes, keep) for path in sorted(folder.glob("*.log")))
