"""Progress of long commands (ragmeshd/progress.py): tqdm on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io
import re

from ragmeshd.progress import Progress, _duration
from tests.helpers import eventually


def test_plain_lines_carry_count_rate_eta_and_come_while_waiting() -> None:
    out = io.StringIO()
    with Progress("ingesting", total=10, unit="docs", stream=out, interval_s=0.05) as progress:
        progress.advance(4)
        progress.note("waiting for embeddings-0")
        # Nothing finishes, yet lines keep coming (however slowly a busy machine runs them).
        eventually(lambda: len(out.getvalue().splitlines()) >= 2, 30, "two lines", interval_s=0.05)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3
    pattern = r"ingesting: 4/10 docs \(\d+\.\d docs/s, ETA \d+ s, \d+ s elapsed\) waiting for (.+)"
    match = re.fullmatch(pattern, lines[0])
    assert match and match.group(1) == "embeddings-0", lines[0]
    assert lines[-1].startswith("ingesting: 4/10 docs")


def test_the_last_line_has_no_eta_when_done() -> None:
    out = io.StringIO()
    with Progress("searching", total=3, unit="queries", stream=out, interval_s=60) as progress:
        progress.advance(3)
    (line,) = out.getvalue().splitlines()
    assert line.startswith("searching: 3/3 queries (") and "ETA" not in line


def test_a_terminal_gets_a_tqdm_bar() -> None:
    out = io.StringIO()
    with Progress("starting", total=5, unit="processes", stream=out, terminal=True) as progress:
        progress.advance(2)
        progress.note("waiting for search-0")
    text = out.getvalue()
    assert "starting" in text and "2/5" in text and "\r" in text
    assert "waiting for search-0" in text


def test_an_unknown_total_counts_up() -> None:
    out = io.StringIO()
    with Progress("exporting", total=None, stream=out, interval_s=60) as progress:
        progress.advance(7)
    assert out.getvalue().startswith("exporting: 7 it (")


def test_durations_read_naturally() -> None:
    assert _duration(42.4) == "42 s"
    assert _duration(125) == "2 min 05 s"
    assert _duration(7322) == "2 h 02 min"
