"""The settings object: defaults, environment, config file, flags, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ragmeshd import defaults
from ragmeshd.settings import load_settings


def test_defaults_come_from_the_defaults_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGMESH_CONFIG_FILE", raising=False)
    settings = load_settings()
    assert settings.embeddings.max_batch_texts == defaults.MAX_BATCH_TEXTS
    assert settings.embeddings.max_client_batch == defaults.MAX_CLIENT_BATCH
    assert settings.state_dir.is_absolute()


def test_environment_then_file_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / "ragmesh.toml"
    config_file.write_text("[embeddings]\nmax_batch_texts = 8\nmax_queue_texts = 100\n")
    monkeypatch.setenv("RAGMESH_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("RAGMESH_EMBEDDINGS__MAX_QUEUE_TEXTS", "200")
    settings = load_settings(embeddings={"listen": "127.0.0.1:1"})
    assert settings.embeddings.max_batch_texts == 8  # from the file
    assert settings.embeddings.max_queue_texts == 200  # the environment beats the file
    assert settings.embeddings.listen == "127.0.0.1:1"  # flags beat everything


def test_invalid_values_are_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGMESH_EMBEDDINGS__MAX_BATCH_TEXTS", "0")
    with pytest.raises(ValidationError, match="max_batch_texts"):
        load_settings()


def test_unknown_keys_in_the_file_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = tmp_path / "ragmesh.toml"
    config_file.write_text("[embeddings]\nmax_batch_textz = 8\n")
    monkeypatch.setenv("RAGMESH_CONFIG_FILE", str(config_file))
    with pytest.raises(ValidationError, match="max_batch_textz"):
        load_settings()
