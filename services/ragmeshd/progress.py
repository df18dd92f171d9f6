"""Progress of long commands: counts, rate and ETA.

On a terminal it is a tqdm bar; anywhere else (a log file, CI) it is a plain line every
`interval_s` seconds and one at the end, so a long run never goes quiet:

    with Progress("ingesting", total=5183, unit="docs") as progress:
        for batch in batches:
            ...
            progress.advance(len(batch))

`note()` says what is being waited for (shown beside the bar, or in the next line).
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

# Plain mode: one line this often while the work goes on.
PLAIN_INTERVAL_S = 10.0


class Progress:
    def __init__(
        self,
        description: str,
        total: int | None,
        unit: str = "it",
        stream: TextIO | None = None,
        interval_s: float = PLAIN_INTERVAL_S,
        terminal: bool | None = None,
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0
        self._stream = stream or sys.stderr
        self._interval_s = interval_s
        self._started = time.monotonic()
        self._note = ""
        self._lock = threading.Lock()
        self._closed = threading.Event()
        is_terminal = self._stream.isatty() if terminal is None else terminal
        self._bar: tqdm | None = None
        if is_terminal:
            self._bar = tqdm(
                total=total, desc=description, unit=unit, file=self._stream, dynamic_ncols=True
            )
        # The bar's clock and the plain lines both move while nothing finishes (a slow start).
        self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
        self._ticker.start()

    def advance(self, count: int = 1) -> None:
        with self._lock:
            self.done += count
            if self._bar is not None:
                self._bar.update(count)

    def note(self, text: str) -> None:
        with self._lock:
            self._note = text
            if self._bar is not None:
                self._bar.set_postfix_str(text)

    def line(self) -> str:
        """The plain form: `ingesting: 1200/5183 docs (150.2 docs/s, ETA 27 s) [note]`."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        text = f"{self.description}: {count} {self.unit} ({rate:.1f} {self.unit}/s"
        if self.total is not None and rate > 0 and self.done < self.total:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        text += f", {_duration(elapsed)} elapsed)"
        return f"{text} {self._note}".rstrip()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._ticker.join()
        if self._bar is not None:
            self._bar.close()
        else:
            self._print()

    def _tick(self) -> None:
        interval = 1.0 if self._bar is not None else self._interval_s
        while not self._closed.wait(interval):
            with self._lock:
                if self._bar is not None:
                    self._bar.refresh()
                else:
                    self._print()

    def _print(self) -> None:
        print(self.line(), file=self._stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _duration(value: float) -> str:
    seconds = round(value)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
