"""Settings of every process: one root object (`Settings`, built by `load_settings`), a section
per service in its own module (settings/<service>.py), the shared ones in settings/core.py."""

from ragmeshd.settings.coordinator import CoordinatorSettings
from ragmeshd.settings.core import (
    MountedCertificatesSettings,
    Section,
    ServerSettings,
    TelemetrySettings,
    parse_otlp_endpoint,
)
from ragmeshd.settings.embeddings import EmbeddingsSettings
from ragmeshd.settings.llm import LlmSettings
from ragmeshd.settings.mesh import MeshSettings, OpenAISettings, RateLimitSettings
from ragmeshd.settings.root import Settings, config_file_path, environment_secret, load_settings
from ragmeshd.settings.search import SearchSettings
from ragmeshd.settings.shared import BreakerSettings, PostgresSettings

__all__ = [
    "BreakerSettings",
    "CoordinatorSettings",
    "EmbeddingsSettings",
    "LlmSettings",
    "MeshSettings",
    "MountedCertificatesSettings",
    "OpenAISettings",
    "PostgresSettings",
    "RateLimitSettings",
    "SearchSettings",
    "Section",
    "ServerSettings",
    "Settings",
    "TelemetrySettings",
    "config_file_path",
    "environment_secret",
    "load_settings",
    "parse_otlp_endpoint",
]
