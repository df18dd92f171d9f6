"""The confidence threshold, re-read from the config file while the server runs.

At most every `check_interval_s` a caller's `current()` looks at the config file's mtime;
when it changed, the threshold is loaded again through the settings machinery (so flags and
RAGMESH_* variables still take precedence over the file, exactly as at start-up). A file
that no longer parses or validates keeps the last good value and logs a warning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

_log = logging.getLogger("ragmesh.coordinator.threshold")


class LiveThreshold:
    """The threshold's current value; cheap to call on every request."""

    def __init__(
        self,
        initial: float,
        *,
        config_file: Path | None,
        load: Callable[[], float],
        check_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._value = initial
        self._file = config_file
        self._load = load
        self._interval_s = check_interval_s
        self._clock = clock
        self._checked_at = clock()
        self._mtime = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        """The file's mtime and size (a change of either means "re-read")."""
        if self._file is None:
            return None
        try:
            stat = self._file.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def current(self) -> float:
        if self._file is None:
            return self._value
        now = self._clock()
        if now - self._checked_at < self._interval_s:
            return self._value
        self._checked_at = now
        mtime = self._stat()
        if mtime is None or mtime == self._mtime:
            return self._value
        self._mtime = mtime
        try:
            value = self._load()
        except Exception as exc:
            _log.warning(
                "config file changed but does not load; keeping the confidence threshold",
                extra={"config_file": str(self._file), "threshold": self._value, "error": str(exc)},
            )
            return self._value
        if value != self._value:
            _log.info(
                "confidence threshold changed",
                extra={"previous": self._value, "threshold": value},
            )
            self._value = value
        return self._value
