"""The production overlay runs every container under the production profile
(ragmeshd/settings/profiles.py), and each container's environment, with Secrets shaped as
their makers make them, passes that profile's checks: a remote PostgreSQL only with
sslmode=verify-full."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from ragmeshd.settings import Settings, load_settings
from tests.deploy.manifests import VARIANTS, Container, Doc, containers, render

# CloudNativePG's application URI names the -rw Service and no sslmode; the user's external
# URI may name none either.
_SECRET_VALUES = {
    ("ragmesh-db-app", "uri"): "postgresql://ragmesh:s3cret@ragmesh-db-rw.ragmesh:5432/ragmesh",
    ("ragmesh-external-db", "uri"): "postgresql://ragmesh:s3cret@db.example.com:5432/ragmesh",
    # components/pooler passes the user and password to libpq apart (PGUSER, PGPASSWORD).
    ("ragmesh-db-app", "username"): "ragmesh",
    ("ragmesh-db-app", "password"): "s3cret",
}
_DATABASE_USERS = {"search", "coordinator"}


def _settings(container: Container, docs: list[Doc], drop: tuple[str, ...] = ()) -> Settings:
    env = container.env(docs, _SECRET_VALUES)
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(("RAGMESH_", "PG", "OTEL_")):
                patch.delenv(key)
        for key, value in env.items():
            if key not in drop:
                patch.setenv(key, value)
        return load_settings()


@pytest.mark.parametrize(
    "variant",
    [v for v in VARIANTS if v.startswith(("production", "example:"))],
)
def test_every_container_passes_the_production_profile(variant: str) -> None:
    docs = render(variant)
    checked = set()
    for container in containers(docs):
        settings = _settings(container, docs)
        assert settings.profile == "production", container.name
        assert settings.mesh.tls and settings.server.require_api_key, container.name
        if container.deployment in _DATABASE_USERS:
            # The remote database is verified: the profile let it through only for that.
            assert settings.search.pg.dsn.startswith("postgresql://"), container.name
            assert settings.pgsslmode == "verify-full", container.name
            assert settings.pgsslrootcert, container.name
            mounts = [path for path, _ in container.mounts()]
            assert any(settings.pgsslrootcert.startswith(path + "/") for path in mounts)
            # Without PGSSLMODE the same URI is refused at start.
            with pytest.raises(ValidationError, match=r"pg.dsn: .*verify-full"):
                _settings(container, docs, drop=("PGSSLMODE",))
        checked.add(container.deployment)
    mesh = {"embeddings", "search", "coordinator", "openai", "ratelimit", "envoy"}
    assert checked == (mesh | {"llm"} if "llm-local" in variant else mesh)


def test_dev_keeps_the_dev_profile() -> None:
    docs = render("dev")
    for container in containers(docs):
        assert _settings(container, docs).profile == "dev", container.name
