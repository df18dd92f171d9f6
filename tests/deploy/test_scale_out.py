"""The manifests beyond one node (issue 27): autoscaling on what limits each service,
PostgreSQL connections that fit the autoscalers' maxima, a pinned PostgreSQL image, backups
and a rendered restore, the GPU, LLM and zone-spread components."""

from __future__ import annotations

import re

import pytest

from ragmeshd.settings import CoordinatorSettings, SearchSettings
from tests.deploy.manifests import VARIANTS, containers, find, one, render, settings_map

AUTOSCALED = ("embeddings", "search", "coordinator", "openai")
# Connections PostgreSQL keeps for others than the services' pools: superusers (3 by
# default), the operator's status and replication (one per standby), backups, a person's psql.
RESERVED_CONNECTIONS = 20


def _scalers(docs: list[dict]) -> dict[str, tuple[int, int]]:
    """Deployment -> (min, max) replicas, from its HPA or KEDA ScaledObject."""
    found = {
        h["spec"]["scaleTargetRef"]["name"]: (h["spec"]["minReplicas"], h["spec"]["maxReplicas"])
        for h in find(docs, "HorizontalPodAutoscaler")
    }
    for scaled in find(docs, "ScaledObject"):
        name = scaled["spec"]["scaleTargetRef"]["name"]
        assert name not in found, f"{name}: an HPA and a ScaledObject would fight"
        found[name] = (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"])
    return found


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_stateless_service_autoscales(variant: str) -> None:
    scalers = _scalers(render(variant))
    for name in AUTOSCALED:
        low, high = scalers[name]
        assert 1 <= low <= high, (variant, name)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if "external" not in v])
def test_postgres_takes_every_pool_at_the_autoscalers_maxima(variant: str) -> None:
    """Search pods' and coordinator pods' pools at maxReplicas fit max_connections: without
    this, PostgreSQL's default 100 ran out at 8-9 search pods."""
    docs = render(variant)
    (cluster,) = find(docs, "Cluster")
    scalers = _scalers(docs)
    needed = (
        scalers["search"][1] * SearchSettings().pg.pool_max_size
        + scalers["coordinator"][1] * CoordinatorSettings().pg.pool_max_size
    )
    parameters = cluster["spec"]["postgresql"]["parameters"]
    assert int(parameters["max_connections"]) >= needed + RESERVED_CONNECTIONS, variant


def test_postgres_runs_a_pinned_image_with_resources() -> None:
    docs = render("production")
    (cluster,) = find(docs, "Cluster")
    spec = cluster["spec"]
    assert "imageName" not in spec and "monitoring" not in spec  # enablePodMonitor: deprecated
    ref = spec["imageCatalogRef"]
    catalog = one(docs, "ImageCatalog", ref["name"])
    (image,) = [i for i in catalog["spec"]["images"] if i["major"] == ref["major"]]
    # A minor release (18.4-...), or a digest; never the floating 18-standard-trixie.
    assert re.search(r":\d+\.\d+-standard-|@sha256:[0-9a-f]{64}$", image["image"]), image
    assert {"cpu", "memory"} <= set(spec["resources"]["requests"])
    assert "memory" in spec["resources"]["limits"]


def test_backups_archive_wal_nightly_and_a_restore_recovers_from_them() -> None:
    docs = render("production+backups")
    (cluster,) = find(docs, "Cluster")
    (plugin,) = cluster["spec"]["plugins"]
    assert plugin["isWALArchiver"] is True
    store = one(docs, "ObjectStore", plugin["parameters"]["barmanObjectName"])
    assert store["spec"]["retentionPolicy"]
    (scheduled,) = find(docs, "ScheduledBackup")
    assert scheduled["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert scheduled["spec"]["method"] == "plugin"
    assert scheduled["spec"]["pluginConfiguration"]["name"] == plugin["name"]
    assert len(scheduled["spec"]["schedule"].split()) == 6  # seconds first

    (restored,) = find(render("production+restore"), "Cluster")
    bootstrap = restored["spec"]["bootstrap"]
    assert "initdb" not in bootstrap
    (origin,) = restored["spec"]["externalClusters"]
    assert bootstrap["recovery"]["source"] == origin["name"]
    assert origin["plugin"]["parameters"]["barmanObjectName"] == store["metadata"]["name"]
    assert origin["plugin"]["parameters"]["serverName"] == cluster["metadata"]["name"]
    # The restored cluster archives under a name of its own, never over its origin's backups.
    (archiver,) = restored["spec"]["plugins"]
    assert archiver["parameters"]["serverName"] != origin["plugin"]["parameters"]["serverName"]


def test_gpu_embeddings_scale_on_their_queue() -> None:
    docs = render("production+gpu")
    embeddings = one(docs, "Deployment", "embeddings")
    pod = embeddings["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "-cuda" in container["image"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RAGMESH_EMBEDDINGS__DEVICE"] == "cuda"
    assert pod["nodeSelector"] and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "replicas" not in embeddings["spec"]
    assert not find(docs, "HorizontalPodAutoscaler", "embeddings")
    (scaled,) = find(docs, "ScaledObject")
    queries = [
        t["metadata"]["query"] for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"
    ]
    assert any("ragmesh_embeddings_queue_depth" in q for q in queries)
    assert any("ragmesh_embeddings_queue_seconds_bucket" in q for q in queries)
    # Prometheus must be scraping the embeddings pods: the monitoring component is there.
    assert find(docs, "ServiceMonitor")


def test_each_apps_replicas_spread_on_their_own() -> None:
    for variant in ("production", "dev+zone-spread"):
        for deployment in find(render(variant), "Deployment"):
            app = deployment["metadata"]["name"]
            constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
            keys = {c["topologyKey"] for c in constraints}
            assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, app
            for constraint in constraints:
                assert constraint["labelSelector"] == {
                    "matchLabels": {"app.kubernetes.io/name": app}
                }
                assert constraint["matchLabelKeys"] == ["pod-template-hash"]


def test_the_remote_llm_is_wired_to_the_coordinator() -> None:
    docs = render("production+llm-remote")
    settings = settings_map(docs)["data"]
    assert settings["RAGMESH_COORDINATOR__REMOTE_URL"].startswith("https://")
    (coordinator,) = [c for c in containers(docs) if c.deployment == "coordinator"]
    key_file = settings["RAGMESH_COORDINATOR__REMOTE_API_KEY_FILE"]
    mounted = {f"{m}/{p}": name for m, p, _, name in coordinator.mounted_files()}
    assert mounted[key_file] == "ragmesh-llm-remote"
    policies = [
        p
        for p in find(docs, "NetworkPolicy")
        if "Egress" in p["spec"]["policyTypes"]
        and p["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": "coordinator"}
    ]
    assert any(rule["ports"] == [{"port": 443}] for p in policies for rule in p["spec"]["egress"])


def test_qdrant_loads_without_being_killed_keeps_snapshots_and_requires_a_key() -> None:
    docs = render("production+qdrant")
    qdrant = one(docs, "StatefulSet", "qdrant")
    (container,) = qdrant["spec"]["template"]["spec"]["containers"]
    startup, liveness = container["startupProbe"], container["livenessProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert liveness["httpGet"]["path"] == "/livez"
    env = {e["name"]: e for e in container["env"]}
    key_ref = env["QDRANT__SERVICE__API_KEY"]["valueFrom"]["secretKeyRef"]
    snapshots = env["QDRANT__STORAGE__SNAPSHOTS_PATH"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {c["metadata"]["name"] for c in qdrant["spec"]["volumeClaimTemplates"]}
    assert mounts[snapshots] in claims and mounts["/qdrant/storage"] in claims
    assert one(docs, "PodDisruptionBudget", "qdrant")["spec"]["maxUnavailable"] == 1
    # Search presents the same Secret's key, from the file its setting names.
    settings = settings_map(docs)["data"]
    (search,) = [c for c in containers(docs) if c.deployment == "search"]
    mounted = {f"{m}/{p}": (name, p) for m, p, _, name in search.mounted_files()}
    assert mounted[settings["RAGMESH_SEARCH__QDRANT_API_KEY_FILE"]] == (
        key_ref["name"],
        key_ref["key"],
    )


def test_qdrant_distributed_nodes_find_each_other() -> None:
    docs = render("production+qdrant-distributed")
    qdrant = one(docs, "StatefulSet", "qdrant")
    assert qdrant["spec"]["replicas"] == 3
    peers = one(docs, "Service", qdrant["spec"]["serviceName"])
    assert peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"]
    (container,) = qdrant["spec"]["template"]["spec"]["containers"]
    script = container["args"][0]
    assert f"qdrant-0.{peers['metadata']['name']}:6335" in script
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["QDRANT__CLUSTER__ENABLED"] == "true"
    assert int(env["QDRANT__STORAGE__COLLECTION__REPLICATION_FACTOR"]) >= 2


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.startswith("example:")])
def test_each_common_setup_pulls_from_its_registry(variant: str) -> None:
    """The examples' image entries match the names the overlay and components leave (an entry
    that matches nothing is silently ignored by kustomize)."""
    for container in containers(render(variant)):
        assert not container.spec["image"].startswith("localhost/"), (variant, container.name)


@pytest.mark.parametrize("variant", ["base", "production", "production+gpu"])
def test_the_model_threads_follow_the_cpu_request(variant: str) -> None:
    docs = render(variant)
    (embeddings,) = [c for c in containers(docs) if c.deployment == "embeddings"]
    env = embeddings.env(docs, secrets={})
    request = str(embeddings.spec["resources"]["requests"]["cpu"])
    cores = int(request[:-1]) / 1000 if request.endswith("m") else float(request)
    assert int(env["RAGMESH_EMBEDDINGS__CPU_THREADS"]) == max(1, -(-int(cores * 1000) // 1000))
