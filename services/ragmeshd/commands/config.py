"""`ragmesh config show|check`: the effective settings with where each came from, and a
config file checked before it is used."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource, TomlConfigSettingsSource

from ragmeshd.commands.convention import settings_or_exit
from ragmeshd.runtime.redaction import REDACTED
from ragmeshd.runtime.redaction import redact as redact_secrets
from ragmeshd.settings import Settings
from ragmeshd.settings.profiles import DEFAULT_PROFILE, PROFILES, profile_defaults

# Settings whose values are secrets, or may hold one (a DSN's password).
_SECRET_NAME = re.compile(r"(password|secret|token|api_key)$")
_DSN_NAME = re.compile(r"dsn$")


def register(subparsers: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser(
        "config",
        help="show the effective settings, or check a config file",
        description="Settings come, highest first, from flags, RAGMESH_* environment variables,"
        " the TOML file named by RAGMESH_CONFIG_FILE, the profile (RAGMESH_PROFILE=dev|"
        "production, or `profile` in the file) and the defaults in ragmeshd/defaults.py.",
    )
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show", help="every setting's value and where it came from (secrets redacted)"
    )
    show.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    show.set_defaults(handler=_show)
    check = actions.add_parser(
        "check", help="report every unknown or invalid key of a TOML config file (exit 1)"
    )
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_check)


# --- show -------------------------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    settings = settings_or_exit()  # a bad setting: one line per key, exit 2
    rows = list(effective_settings(settings))
    if args.json:
        print(json.dumps({path: {"value": v, "source": s} for path, v, s in rows}, indent=2))
        return 0
    width = max(len(path) for path, _, _ in rows)
    for path, value, source in rows:
        print(f"{path:<{width}}  {json.dumps(value):<40} {source}")
    return 0


def effective_settings(settings: Settings) -> Iterator[tuple[str, Any, str]]:
    """(dotted path, value with secrets redacted, source) for every setting."""
    config_file = os.environ.get("RAGMESH_CONFIG_FILE")
    sources: list[tuple[str, dict[str, Any]]] = [("env", EnvSettingsSource(Settings)())]
    if config_file:
        sources.append((f"file {config_file}", TomlConfigSettingsSource(Settings, config_file)()))
    sources.append((f"profile {settings.profile}", profile_defaults(settings.profile)))
    for path, value in _leaves(settings.model_dump(mode="json")):
        source = "default"
        for name, values in sources:
            found = _found(values, path)
            if found is not None:
                source = f"env {_env_name(found)}" if name == "env" else name
                break
        if path == "profile" and source == "default" and settings.profile != DEFAULT_PROFILE:
            source = "file"
        yield ".".join(path), redact(path[-1], value), source


def _leaves(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple, Any]]:
    for key, value in values.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _found(values: dict[str, Any], path: tuple[str, ...]) -> tuple[str, ...] | None:
    """Where a source sets `path`: as nested (search.pg.dsn) or by the flat name a nested
    group's setting had before (search.pg_dsn; settings/shared.py)."""
    candidates = [path]
    if len(path) >= 3:
        candidates.append((*path[:-2], f"{path[-2]}_{path[-1]}"))
    return next((c for c in candidates if _has(values, c)), None)


def _has(values: dict[str, Any], path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(values, dict) or key not in values:
            return False
        values = values[key]
    return True


def _env_name(path: tuple[str, ...]) -> str:
    return "RAGMESH_" + "__".join(part.upper() for part in path)


def redact(name: str, value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return value
    if _DSN_NAME.search(name):
        return redact_secrets(value)
    if _SECRET_NAME.search(name):
        return REDACTED
    return value


# --- check ------------------------------------------------------------------------------------


def check_file(path: Path) -> list[str]:
    """Every problem of a config file as `key.path: reason`; empty when it is valid."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        return [f"cannot read: {error.strerror}"]
    except tomllib.TOMLDecodeError as error:
        return [f"not valid TOML: {error}"]
    profile = data.get("profile", DEFAULT_PROFILE)
    base = profile_defaults(profile) if profile in PROFILES else {}
    problems: list[str] = []
    # Checks across keys (the profile's rules, consistency) run only once every key is valid
    # on its own: drop the keys found wrong and validate again, so one run reports them all.
    for _attempt in range(3):
        try:
            Settings.model_validate(_merge(base, data))
        except ValidationError as error:
            problems += [p for p in _problems(error) if p not in problems]
            dropped = [_drop(data, entry["loc"]) for entry in error.errors()]
            if not any(dropped):
                break
        else:
            break
    return problems


def _drop(data: dict[str, Any], loc: tuple[Any, ...]) -> bool:
    """Remove the key at `loc` from `data`; False when there is none to remove."""
    *parents, last = loc or (None,)
    for key in parents:
        data = data.get(key) if isinstance(data, dict) else None  # type: ignore[assignment]
    if isinstance(data, dict) and last in data:
        del data[last]
        return True
    return False


def _check(args: argparse.Namespace) -> int:
    problems = check_file(args.file)
    for problem in problems:
        print(f"{args.file}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.file}: OK")
    return 1 if problems else 0


def _problems(error: ValidationError) -> list[str]:
    lines = []
    for entry in error.errors():
        reason = entry["msg"].removeprefix("Value error, ")
        if not entry["loc"]:
            # A check across keys: each line already starts with the key it is about.
            lines += reason.splitlines()
            continue
        path = ".".join(str(part) for part in entry["loc"])
        if entry["type"] == "extra_forbidden":
            reason = "unknown key"
        lines.append(f"{path}: {reason}")
    return lines


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
