"""Every `ragmesh bench` subcommand hands its measurement to the one report printer with the
parsed arguments (the printer reads --json from them): a handler that forgot them crashed
with a TypeError before measuring anything."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from ragmeshd.cli import build_parser
from ragmeshd.commands.bench import emit_report

BENCHES = ["embed", "search", "ingest", "overload", "ask", "search-cache"]


@pytest.mark.parametrize("bench", BENCHES)
def test_every_bench_hands_its_arguments_to_the_report_printer(bench: str) -> None:
    args = build_parser().parse_args(["bench", bench])
    assert args.emit_report is emit_report
    handed: list[tuple[argparse.Namespace, str]] = []

    def record(given: argparse.Namespace, name: str, produce: Callable[[], object]) -> int:
        handed.append((given, name))
        return 0

    args.emit_report = record
    assert args.handler(args) == 0
    assert handed == [(args, bench)]
