"""The one settings object of a ragmesh process.

Values come, in order of precedence, from: keyword arguments (the CLI's flags), environment
variables with the prefix ``RAGMESH_`` (nested with ``__``, e.g.
``RAGMESH_EMBEDDINGS__MAX_BATCH_TEXTS=32``), the TOML file named by ``RAGMESH_CONFIG_FILE``,
and the defaults in services/defaults.py. Settings are validated when the process starts;
nothing else in ragmesh reads ``os.environ``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from services import defaults



class _Section(BaseModel):
    """A settings section: an unknown key is a typo, refused at start."""

    model_config = ConfigDict(extra="forbid")

class EmbeddingsSettings(_Section):
    """The embeddings server."""

    listen: str = defaults.EMBEDDINGS_LISTEN
    # A local sentence-transformers model directory; empty means the packaged all-MiniLM-L6-v2.
    model_path: str = ""
    device: Literal["auto", "cpu", "cuda"] = defaults.DEVICE
    max_client_batch: int = Field(defaults.MAX_CLIENT_BATCH, ge=1, le=4096)
    max_input_chars: int = Field(defaults.MAX_INPUT_CHARS, ge=1)
    max_batch_texts: int = Field(defaults.MAX_BATCH_TEXTS, ge=1, le=4096)
    max_batch_delay_ms: float = Field(defaults.MAX_BATCH_DELAY_MS, ge=0)
    micro_batch_texts: int = Field(defaults.MICRO_BATCH_TEXTS, ge=1, le=4096)
    max_queue_texts: int = Field(defaults.MAX_QUEUE_TEXTS, ge=1)
    model_load_attempts: int = Field(defaults.MODEL_LOAD_ATTEMPTS, ge=1)
    model_load_backoff_base_s: float = Field(defaults.MODEL_LOAD_BACKOFF_BASE_S, ge=0)


class SearchSettings(_Section):
    """The search server (issue: search service). Add search fields here."""

    listen: str = defaults.SEARCH_LISTEN


class CoordinatorSettings(_Section):
    """The coordinator server. Add coordinator fields here."""

    listen: str = defaults.COORDINATOR_LISTEN


class MeshSettings(_Section):
    """Envoy, certificates and `ragmesh up`. Add mesh fields here."""

    # When true, every server requires Envoy's client certificate (mTLS) on its port.
    tls: bool = False


class ServerSettings(_Section):
    """What every gRPC server process shares."""

    default_deadline_s: float = Field(defaults.DEFAULT_DEADLINE_S, gt=0)
    shutdown_drain_s: float = Field(defaults.SHUTDOWN_DRAIN_S, ge=0)
    shutdown_grace_s: float = Field(defaults.SHUTDOWN_GRACE_S, ge=0)
    max_message_bytes: int = Field(defaults.MAX_MESSAGE_BYTES, ge=1024)


class Settings(BaseSettings):
    """All of ragmesh's settings; each process builds exactly one."""

    model_config = SettingsConfigDict(
        env_prefix="RAGMESH_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    state_dir: Path = Path(defaults.STATE_DIR)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    server: ServerSettings = ServerSettings()
    embeddings: EmbeddingsSettings = EmbeddingsSettings()
    search: SearchSettings = SearchSettings()
    coordinator: CoordinatorSettings = CoordinatorSettings()
    mesh: MeshSettings = MeshSettings()

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("RAGMESH_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def load_settings(**overrides: object) -> Settings:
    """Build and validate the process's settings; overrides are the CLI's flags."""
    return Settings(**overrides)  # type: ignore[arg-type]
