"""The CloudNativePG Pooler (components/pooler): PgBouncer in transaction mode in front of the
cluster's primary, sized from the autoscalers' maxima; the services' queries go through it
with the pooled settings' mode on, their migrations straight to the cluster, and PgBouncer's
TLS certificate names the host they dial."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from ragmeshd import defaults
from ragmeshd.settings import CoordinatorSettings, SearchSettings
from tests.deploy.manifests import VARIANTS, Doc, containers, find, render
from tests.deploy.test_network_policy import Pod, _pods, allowed
from tests.deploy.test_scale_out import RESERVED_CONNECTIONS, _scalers

POOLED = [v for v in VARIANTS if "pooler" in v or v == "example:production-pgvector"]
SECRETS = {
    ("ragmesh-db-app", "uri"): "postgresql://ragmesh:secret@ragmesh-db-rw.ragmesh:5432/ragmesh",
    ("ragmesh-db-app", "username"): "ragmesh",
    ("ragmesh-db-app", "password"): "secret",
}


def _pooler(docs: list[Doc]) -> Doc:
    (pooler,) = find(docs, "Pooler")
    return pooler


def test_every_pooled_variant_is_rendered_and_validated() -> None:
    assert {"dev+pooler", "production+pooler", "example:production-pgvector"} <= set(POOLED)


@pytest.mark.parametrize("variant", POOLED)
def test_pgbouncer_pools_transactions_for_the_primary(variant: str) -> None:
    docs = render(variant)
    pooler = _pooler(docs)
    (cluster,) = find(docs, "Cluster")
    assert pooler["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert pooler["spec"]["type"] == "rw"
    assert pooler["spec"]["pgbouncer"]["poolMode"] == "transaction"


@pytest.mark.parametrize("variant", POOLED)
def test_pool_sizes_follow_the_autoscalers_maxima(variant: str) -> None:
    """Every client connection at maxReplicas fits one PgBouncer pod (the other may be down);
    every PgBouncer pod's server connections, the migrations' direct ones and the reserve fit
    max_connections."""
    docs = render(variant)
    pooler, scalers = _pooler(docs), _scalers(docs)
    (cluster,) = find(docs, "Cluster")
    parameters = {k: int(v) for k, v in pooler["spec"]["pgbouncer"]["parameters"].items()}
    search_pods, coordinator_pods = scalers["search"][1], scalers["coordinator"][1]
    clients = (
        search_pods * (SearchSettings().pg.pool_max_size + defaults.SEARCH_RESULT_CACHE_POOL_MAX)
        + coordinator_pods * CoordinatorSettings().pg.pool_max_size
    )
    assert parameters["max_client_conn"] >= clients, variant
    per_pod = min(parameters["default_pool_size"], parameters["max_db_connections"])
    server = pooler["spec"]["instances"] * per_pod
    migrations = search_pods + coordinator_pods  # one direct connection per starting pod
    max_connections = int(cluster["spec"]["postgresql"]["parameters"]["max_connections"])
    assert server + migrations + RESERVED_CONNECTIONS <= max_connections, variant


@pytest.mark.parametrize("variant", POOLED)
def test_queries_go_through_the_pooler_and_migrations_to_the_cluster(variant: str) -> None:
    docs = render(variant)
    pooler_host = _pooler(docs)["metadata"]["name"]
    (cluster,) = find(docs, "Cluster")
    # PgBouncer presents the cluster's server certificate: it must name the pooler's host.
    assert pooler_host in cluster["spec"]["certificates"]["serverAltDNSNames"]
    for service in ("search", "coordinator"):
        (container,) = [c for c in containers(docs) if c.deployment == service and not c.init]
        env = container.env(docs, SECRETS)
        pg = f"RAGMESH_{service.upper()}__PG_"
        assert urlsplit(env[f"{pg}DSN"]).hostname == pooler_host, service
        assert "@" not in env[f"{pg}DSN"]  # the password comes from PGPASSWORD
        assert env[f"{pg}MIGRATE_DSN"] == SECRETS[("ragmesh-db-app", "uri")], service
        assert env[f"{pg}TRANSACTION_POOLING"] == "true", service
        assert (env["PGUSER"], env["PGPASSWORD"]) == ("ragmesh", "secret")
        assert env["PGSSLMODE"] == "verify-full", service


@pytest.mark.parametrize("variant", POOLED)
def test_the_services_reach_the_pooler_and_the_pooler_the_database(variant: str) -> None:
    docs = render(variant)
    pods = _pods(docs)
    pooler = _pooler(docs)
    # The labels CloudNativePG gives the Pooler's pods.
    bouncer = Pod(
        "ragmesh",
        {
            "cnpg.io/cluster": pooler["spec"]["cluster"]["name"],
            "cnpg.io/poolerName": pooler["metadata"]["name"],
            "cnpg.io/podRole": "pooler",
        },
        {5432},
    )
    for service in ("search", "coordinator"):
        assert allowed(docs, pods[service], bouncer, 5432), service
    assert allowed(docs, bouncer, pods["ragmesh-db"], 5432)
    for other in ("embeddings", "envoy", "openai", "ratelimit"):
        assert not allowed(docs, pods[other], bouncer, 5432), other
