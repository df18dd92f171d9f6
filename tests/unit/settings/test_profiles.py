"""Profiles and precedence (flags > environment > file > profile > defaults), and the
`ragmesh config show|check` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ragmeshd import defaults
from ragmeshd.cli import main
from ragmeshd.commands.config import check_file, effective_settings, redact
from ragmeshd.settings import load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite sets a few RAGMESH_* variables for its servers; these tests own the environment.
    import os

    for name in list(os.environ):
        if name.startswith("RAGMESH_") or name == "OTEL_EXPORTER_OTLP_ENDPOINT":
            monkeypatch.delenv(name)


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ragmesh.toml"
    path.write_text(text)
    return path


def test_precedence_flag_env_file_profile_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # max_message_bytes: default 16 MiB, production profile 4 MiB.
    assert load_settings().server.max_message_bytes == defaults.MAX_MESSAGE_BYTES
    monkeypatch.setenv("RAGMESH_PROFILE", "production")
    assert load_settings().server.max_message_bytes == 4 * 1024 * 1024
    config = _file(tmp_path, "[server]\nmax_message_bytes = 2000000\n")
    monkeypatch.setenv("RAGMESH_CONFIG_FILE", str(config))
    assert load_settings().server.max_message_bytes == 2_000_000
    monkeypatch.setenv("RAGMESH_SERVER__MAX_MESSAGE_BYTES", "3000000")
    assert load_settings().server.max_message_bytes == 3_000_000
    flagged = load_settings(server={"max_message_bytes": 5_000_000})
    assert flagged.server.max_message_bytes == 5_000_000
    # A flag for one key leaves the section's other keys to the lower sources.
    assert flagged.server.require_api_key is True and flagged.mesh.tls is True


def test_the_profile_may_come_from_the_file_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGMESH_CONFIG_FILE", str(_file(tmp_path, 'profile = "production"\n')))
    settings = load_settings()
    assert settings.profile == "production" and settings.telemetry.sampling_ratio == 0.01
    monkeypatch.setenv("RAGMESH_PROFILE", "dev")
    settings = load_settings()
    assert settings.profile == "dev" and settings.mesh.tls is False


def test_dev_is_the_plain_defaults() -> None:
    settings = load_settings()
    assert settings.profile == "dev"
    assert settings.mesh.tls is False
    assert settings.telemetry.sampling_ratio == defaults.TRACE_SAMPLING_RATIO


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("RAGMESH_MESH__TLS", "false", "mesh.tls"),
        ("RAGMESH_SERVER__REQUIRE_API_KEY", "false", "server.require_api_key"),
        ("RAGMESH_SEARCH__PG_DSN", "postgresql://u@db.example.com/x", "search.pg.dsn"),
        # Migrations past a pooler connect to the database itself: verified as well.
        ("RAGMESH_SEARCH__PG_MIGRATE_DSN", "postgresql://u@db-rw/x", "search.pg.migrate_dsn"),
        ("RAGMESH_COORDINATOR__REMOTE_URL", "http://api.example.com/v1", "remote_url"),
        ("RAGMESH_TELEMETRY__OTLP_ENDPOINT", "10.1.2.3:4317", "telemetry.otlp_endpoint"),
    ],
)
def test_production_refuses_plaintext_and_keyless_settings_at_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv("RAGMESH_PROFILE", "production")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=problem):
        load_settings()
    monkeypatch.setenv("RAGMESH_PROFILE", "dev")
    load_settings()  # the same setting is fine in dev


def test_production_accepts_local_and_verified_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGMESH_PROFILE", "production")
    monkeypatch.setenv("RAGMESH_SEARCH__PG_DSN", "postgresql://u@db/x?sslmode=verify-full")
    monkeypatch.setenv("RAGMESH_COORDINATOR__LOCAL_URL", "http://127.0.0.1:8080/v1")
    monkeypatch.setenv("RAGMESH_TELEMETRY__OTLP_ENDPOINT", "localhost:4317")
    assert load_settings().profile == "production"


@pytest.mark.parametrize(
    ("dsn_query", "pgsslmode", "accepted"),
    [
        # CloudNativePG's URI names no sslmode: PGSSLMODE, which the client applies, decides.
        ("", "verify-full", True),
        ("", "require", False),
        ("", "", False),
        # The DSN's own sslmode wins over PGSSLMODE, as in the client.
        ("?sslmode=require", "verify-full", False),
        ("?sslmode=verify-full", "disable", True),
    ],
)
def test_production_reads_sslmode_as_the_postgres_client_does(
    monkeypatch: pytest.MonkeyPatch, dsn_query: str, pgsslmode: str, accepted: bool
) -> None:
    monkeypatch.setenv("RAGMESH_PROFILE", "production")
    monkeypatch.setenv(
        "RAGMESH_COORDINATOR__PG_DSN", f"postgresql://u:p@db-rw.ns:5432/x{dsn_query}"
    )
    monkeypatch.setenv("PGSSLROOTCERT", "/etc/ragmesh/postgres-ca/ca.crt")
    if pgsslmode:
        monkeypatch.setenv("PGSSLMODE", pgsslmode)
    else:
        monkeypatch.delenv("PGSSLMODE", raising=False)
    if accepted:
        assert load_settings().pgsslmode == pgsslmode
    else:
        with pytest.raises(ValidationError, match=r"coordinator.pg.dsn: .*verify-full"):
            load_settings()


def test_an_unknown_profile_names_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGMESH_PROFILE", "staging")
    with pytest.raises(ValidationError, match="'dev' or 'production'"):
        load_settings()


def test_show_names_each_settings_source_and_redacts_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGMESH_PROFILE", "production")
    monkeypatch.setenv("RAGMESH_CONFIG_FILE", str(_file(tmp_path, "[search]\nrrf_k = 10\n")))
    monkeypatch.setenv("RAGMESH_SEARCH__PG_DSN", "postgresql://u:hunter2@localhost/x")
    rows = {path: (value, source) for path, value, source in effective_settings(load_settings())}
    assert rows["profile"] == ("production", "env RAGMESH_PROFILE")
    assert rows["search.rrf_k"] == (10, f"file {tmp_path / 'ragmesh.toml'}")
    assert rows["mesh.tls"] == (True, "profile production")
    assert rows["search.bm25_k1"][1] == "default"
    assert rows["search.pg.dsn"] == ("postgresql://u:***@localhost/x", "env RAGMESH_SEARCH__PG_DSN")
    assert all("hunter2" not in str(value) for value, _ in rows.values())


def test_redaction() -> None:
    assert redact("pg_dsn", "postgresql://a:b@h/db?password=c") == (
        "postgresql://a:***@h/db?password=***"
    )
    assert redact("api_key", "rmk_x") == "***"
    assert redact("local_api_key_file", "/keys/local") == "/keys/local"
    assert redact("pg_dsn", "") == ""


def test_check_reports_every_unknown_and_invalid_key_with_its_path(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        'profile = "production"\n'
        "[search]\nbogus = 1\nrrf_k = 0\n"
        "[mesh]\ntls = false\n"
        "[nosuch]\na = 1\n",
    )
    problems = check_file(path)
    assert sorted(problems) == sorted(
        [
            "search.bogus: unknown key",
            "search.rrf_k: Input should be greater than or equal to 1",
            "nosuch: unknown key",
            "mesh.tls: must be true in production (no plaintext between processes)",
        ]
    )


def test_check_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _file(tmp_path, "[search]\nrrf_k = 10\n")
    with pytest.raises(SystemExit) as ok:
        main(["config", "check", str(good)])
    assert ok.value.code == 0 and "OK" in capsys.readouterr().out
    broken = tmp_path / "broken.toml"
    broken.write_text("x = [")
    with pytest.raises(SystemExit) as failed:
        main(["config", "check", str(broken)])
    captured = capsys.readouterr()
    assert failed.value.code == 1 and "not valid TOML" in captured.err and captured.out == ""
    with pytest.raises(SystemExit) as missing:
        main(["config", "check", str(tmp_path / "none.toml")])
    assert missing.value.code == 1


def test_show_command(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as shown:
        main(["config", "show", "--json"])
    assert shown.value.code == 0
    import json

    shown_settings = json.loads(capsys.readouterr().out)
    assert shown_settings["profile"] == {"value": "dev", "source": "default"}
    monkeypatch.setenv("RAGMESH_PROFILE", "production")
    monkeypatch.setenv("RAGMESH_MESH__TLS", "false")
    with pytest.raises(SystemExit) as refused:
        main(["config", "show"])
    # A bad setting is a usage error (docs/cli.md): exit 2, one line per key on stderr.
    assert refused.value.code == 2 and "mesh.tls" in capsys.readouterr().err
