"""The one settings object of a ragmesh process.

Values come, in order of precedence, from: keyword arguments (the CLI's flags), environment
variables with the prefix ``RAGMESH_`` (nested with ``__``, e.g.
``RAGMESH_EMBEDDINGS__MAX_BATCH_TEXTS=32``), the TOML file named by ``RAGMESH_CONFIG_FILE``,
and the defaults in ragmeshd/defaults.py. Settings are validated when the process starts;
nothing else in ragmesh reads ``os.environ``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ragmeshd import defaults
from ragmeshd.settings.coordinator import CoordinatorSettings
from ragmeshd.settings.core import MountedCertificatesSettings, ServerSettings, TelemetrySettings
from ragmeshd.settings.embeddings import EmbeddingsSettings
from ragmeshd.settings.llm import LlmSettings
from ragmeshd.settings.mesh import MeshSettings, OpenAISettings, RateLimitSettings
from ragmeshd.settings.profiles import (
    DEFAULT_PROFILE,
    PROFILES,
    Profile,
    production_problems,
    profile_defaults,
)
from ragmeshd.settings.search import SearchSettings


class Settings(BaseSettings):
    """All of ragmesh's settings; each process builds exactly one."""

    model_config = SettingsConfigDict(
        env_prefix="RAGMESH_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    # The profile whose defaults apply (settings/profiles.py): RAGMESH_PROFILE or the file's
    # `profile` key.
    profile: Profile = DEFAULT_PROFILE
    state_dir: Path = Path(defaults.STATE_DIR)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    server: ServerSettings = ServerSettings()
    embeddings: EmbeddingsSettings = EmbeddingsSettings()
    search: SearchSettings = SearchSettings()
    coordinator: CoordinatorSettings = CoordinatorSettings()
    llm: LlmSettings = LlmSettings()
    mesh: MeshSettings = MeshSettings()
    openai: OpenAISettings = OpenAISettings()
    ratelimit: RateLimitSettings = RateLimitSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    mounted_certs: MountedCertificatesSettings = MountedCertificatesSettings()
    # The standard OpenTelemetry variable, read here so that this object stays the only reader
    # of the environment; it fills telemetry.otlp_endpoint when that is unset.
    otel_exporter_otlp_endpoint: str = Field(
        "", validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT"), exclude=True, repr=False
    )
    # libpq's standard variables, which the PostgreSQL client (asyncpg) reads for a DSN that
    # names no sslmode / sslrootcert (Kubernetes: CloudNativePG's URI names neither). Read here
    # too so that the production profile can tell whether a remote database is verified.
    pgsslmode: str = Field("", validation_alias=AliasChoices("PGSSLMODE"), exclude=True)
    pgsslrootcert: str = Field("", validation_alias=AliasChoices("PGSSLROOTCERT"), exclude=True)

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def models_dir(self) -> Path:
        """Where converted embedding models are kept: the setting, else the state folder's."""
        return Path(self.embeddings.runtime_cache_dir or self.state_dir / "models")

    @model_validator(mode="after")
    def _standard_otlp_endpoint(self) -> Settings:
        if self.otel_exporter_otlp_endpoint.strip() and not self.telemetry.otlp_endpoint:
            self.telemetry = TelemetrySettings.model_validate(
                {**self.telemetry.model_dump(), "otlp_endpoint": self.otel_exporter_otlp_endpoint}
            )
        return self

    @model_validator(mode="after")
    def _profile_rules(self) -> Settings:
        if self.profile == "production":
            problems = production_problems(
                self.model_dump(),
                libpq_env={"PGSSLMODE": self.pgsslmode, "PGSSLROOTCERT": self.pgsslrootcert},
            )
            if problems:
                raise ValueError("\n".join(problems))
        return self

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
        file_source = None
        if config_file:
            file_source = TomlConfigSettingsSource(settings_cls, toml_file=config_file)
            sources.append(file_source)
        sources.append(ProfileSource(settings_cls, file_source))
        return tuple(sources)


class ProfileSource(PydanticBaseSettingsSource):
    """The chosen profile's defaults, below every other source (ragmeshd/settings/profiles.py). The
    profile is RAGMESH_PROFILE, else the config file's `profile`, else dev."""

    def __init__(
        self, settings_cls: type[BaseSettings], file_source: PydanticBaseSettingsSource | None
    ) -> None:
        super().__init__(settings_cls)
        self._file_source = file_source

    def chosen(self) -> str:
        from_file = self._file_source().get("profile") if self._file_source else None
        return os.environ.get("RAGMESH_PROFILE") or from_file or DEFAULT_PROFILE

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # the whole dict comes from __call__

    def __call__(self) -> dict[str, Any]:
        chosen = self.chosen()
        # An unknown name is left to the `profile` field's validation, which names the choices.
        return profile_defaults(chosen) if chosen in PROFILES else {}


def load_settings(**overrides: object) -> Settings:
    """Build and validate the process's settings; overrides are the CLI's flags."""
    return Settings(**overrides)  # type: ignore[arg-type]


def config_file_path() -> Path | None:
    """The TOML file named by RAGMESH_CONFIG_FILE, if any, for the few settings a running
    process re-reads (the coordinator's confidence threshold)."""
    value = os.environ.get("RAGMESH_CONFIG_FILE")
    return Path(value) if value else None


def environment_secret(name: str, *, forget: bool = False) -> str | None:
    """The value of the environment variable `name` (a secret named in the settings, such as
    the CA passphrase), removed from this process's environment when `forget`, so that the
    processes it starts do not inherit it."""
    value = os.environ.pop(name, None) if forget else os.environ.get(name)
    return value or None
