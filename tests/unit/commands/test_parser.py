"""The convention (docs/cli.md) held for every subcommand by walking the argparse parser:
secrets only from files, `--state-dir` only global, help on every flag of `bench` and
`eval`, `--json` where the convention promises it, durations with units."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from ragmeshd.cli import build_parser
from ragmeshd.commands.convention import parse_duration


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command's parser with its words, e.g. ("bench", "search")."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def flags(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        for option in action.option_strings:
            yield option, action


ALL = list(commands(build_parser()))


def by_path(words: str) -> argparse.ArgumentParser:
    return dict(ALL)[tuple(words.split())]


def test_secrets_only_from_files() -> None:
    for path, parser in ALL:
        for option, _ in flags(parser):
            assert option not in ("--api-key", "--pg-dsn", "--llm-api-key"), (path, option)


def test_state_dir_is_only_the_global_option() -> None:
    for path, parser in ALL:
        if path:
            assert "--state-dir" not in dict(flags(parser)), path


@pytest.mark.parametrize(
    "words",
    [p for p, _ in ALL if (p[:1] in (("bench",), ("eval",)) and len(p) > 1) or p == ("eval",)],
)
def test_every_bench_and_eval_flag_has_help_and_json(words: tuple[str, ...]) -> None:
    parser = by_path(" ".join(words))
    for option, action in flags(parser):
        if option in ("-h", "--help") or action.help == argparse.SUPPRESS:
            continue
        assert action.help, f"ragmesh {' '.join(words)} {option} has no help"
    assert "--json" in dict(flags(parser)), words


@pytest.mark.parametrize(
    "words", ["status", "keys list", "db status", "eval", "profile", "config show"]
)
def test_json_where_the_convention_promises_it(words: str) -> None:
    assert "--json" in dict(flags(by_path(words)))


@pytest.mark.parametrize(
    ("words", "flag"),
    [
        ("profile", "--duration"),
        ("kubernetes drain-envoy", "--wait"),
        ("bench overload", "--duration"),
        ("bench overload", "--capacity-duration"),
    ],
)
def test_durations_take_units(words: str, flag: str) -> None:
    assert dict(flags(by_path(words)))[flag].type is parse_duration or (
        dict(flags(by_path(words)))[flag].type.__name__ == "parse_duration"
    )


def test_old_duration_spellings_still_parse() -> None:
    parser = build_parser()
    assert parser.parse_args(["profile", "--seconds", "2"]).seconds == 2.0
    assert parser.parse_args(["profile", "--duration", "500ms"]).seconds == 0.5
    assert parser.parse_args(["kubernetes", "drain-envoy", "--seconds", "10"]).seconds == 10.0
    assert parser.parse_args(["kubernetes", "drain-envoy"]).seconds == 10.0
    assert parser.parse_args(["bench", "overload", "--duration-s", "5"]).duration_s == 5.0
    assert parser.parse_args(["bench", "overload", "--duration", "1m"]).duration_s == 60.0


def test_global_state_dir_survives_the_subcommands(tmp_path: object) -> None:
    for words in (["bench", "ask"], ["eval", "--beir", "x"], ["bench", "search"], ["db", "status"]):
        args = build_parser().parse_args(["--state-dir", "/tmp/x", *words])
        assert str(args.state_dir) == "/tmp/x", words
