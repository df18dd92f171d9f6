"""The mesh from a wheel installed outside the checkout, started as the Kubernetes manifests
start it: every container's command, args and environment from the rendered manifests,
certificates as cert-manager would issue them from the Certificate resources, each declared
probe run against its container, then calls through the Envoy configuration rendered for
Kubernetes reaching every service (and, through Envoy's internal listener, service to
service). So neither the packaging nor the manifests can drift from the CLI, the ports, the
health names or the certificate names."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import httpx
import pytest
import yaml

from ragmesh.coordinator.v1 import coordinator_service_pb2 as coordinator_pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as coordinator_grpc
from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from ragmeshd.pki import authority, certs
from ragmeshd.postgres.embedded import EmbeddedPostgres
from ragmeshd.runtime.auth import DEFAULT_KEY_NAME, KeyStore
from ragmeshd.runtime.channels import metadata_interceptors
from ragmeshd.runtime.keystore import RateLimit
from ragmeshd.runtime.tls import channel_credentials
from tests.deploy.installed import Installed, install_wheel
from tests.deploy.manifests import Doc, containers, find, one, render
from tests.deploy.pods import (
    PortMap,
    hosts_file,
    localize,
    pod_root,
    probe,
    probe_passes,
    started,
    with_hosts,
)
from tests.helpers import ServerProcess, free_port, wait_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.long]

STARTUP_TIMEOUT_S = 240.0
PROBE_TIMEOUT_S = 30.0
SERVICES = ("embeddings", "search", "coordinator")
# The OpenAI adapter and the rate-limit service, behind headless Services of these names.
HELPERS = ("openai", "ratelimit")
LIMITED_KEY = "limited"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return install_wheel(tmp_path_factory.mktemp("wheel"))


def _secrets(docs: list[Doc], folder: Path) -> dict[str, Path]:
    """Each Certificate's Secret as cert-manager writes it (tls.crt, tls.key, ca.crt), issued
    from one CA with exactly the names and usages the Certificate asks for."""
    ca_state = certs.ensure_certificates(folder / "ca")
    ca = authority.load_ca(ca_state.ca, folder / "ca" / "ca-key.pem", need_key=True)
    secrets: dict[str, Path] = {}
    for certificate in find(docs, "Certificate"):
        spec = certificate["spec"]
        if spec.get("isCA"):
            continue
        secret = folder / spec["secretName"]
        secret.mkdir()
        (uri,) = spec["uris"]
        leaf = certs.LeafSpec(
            certs.Identity(secret / "tls.crt", secret / "tls.key"),
            spec["commonName"],
            tuple(spec.get("dnsNames", ())),
            uri,
            is_server="server auth" in spec["usages"],
        )
        certs.issue_leaf(ca, leaf, valid_days=90)
        shutil.copy(ca_state.ca, secret / "ca.crt")
        secrets[spec["secretName"]] = secret
    keys = folder / "ragmesh-api-keys"
    store = KeyStore(keys)
    for name in (DEFAULT_KEY_NAME, "service-search", "service-coordinator"):
        store.ensure_named_key(name)
    # A key with a limit for the rate-limit check: 2 calls at once, then one each 100 s.
    limited = store.create(LIMITED_KEY, scopes=["embed"], rate=RateLimit(0.01, 2))
    (keys / f"{LIMITED_KEY}.key").write_text(limited)
    secrets["ragmesh-api-keys"] = keys
    # CloudNativePG's CA Secret (only ca.crt is mounted). The smoke test's database is the
    # embedded one on a unix socket, where no TLS happens; the client still loads this file
    # for PGSSLMODE=verify-full (tests/integration/postgres/test_tls_env.py covers TLS).
    database_ca = folder / "ragmesh-db-ca"
    database_ca.mkdir()
    shutil.copy(ca_state.ca, database_ca / "ca.crt")
    secrets["ragmesh-db-ca"] = database_ca
    # trust-manager's place: the Bundle's ConfigMap (ca.crt), here the one CA.
    for bundle in find(render("cluster"), "Bundle"):
        trust = folder / bundle["metadata"]["name"]
        trust.mkdir()
        shutil.copy(ca_state.ca, trust / bundle["spec"]["target"]["configMap"]["key"])
        secrets[bundle["metadata"]["name"]] = trust
    return secrets


async def _rate_limited(endpoints: list[str], client: Path, limited_key: str) -> None:
    """A key's limit across Envoy pods: its burst of 2 calls, one through each Envoy, pass;
    then each Envoy answers RESOURCE_EXHAUSTED with the time to wait. One bucket for the key,
    in the one rate-limit pod both Envoys ask (per-Envoy buckets would let 2 more through)."""
    credentials = channel_credentials(client / "ca.crt", client / "tls.crt", client / "tls.key")
    stubs = []
    async with contextlib.AsyncExitStack() as stack:
        for endpoint in endpoints:
            channel = await stack.enter_async_context(
                grpc.aio.secure_channel(
                    endpoint,
                    credentials,
                    options=[("grpc.ssl_target_name_override", "envoy")],
                    interceptors=metadata_interceptors(limited_key),
                )
            )
            stubs.append(embeddings_grpc.EmbeddingsServiceStub(channel))
        for stub in stubs:
            await stub.Info(embeddings_pb.InfoRequest(), timeout=30)
        for stub in stubs:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Info(embeddings_pb.InfoRequest(), timeout=30)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            trailers = dict(refused.value.trailing_metadata() or ())
            assert int(trailers["retry-after"]) >= 1, trailers


@contextmanager
def _second_envoy(config: Path, hosts: Path, installed: Installed, logs: Path) -> Iterator[str]:
    """A second Envoy pod: every pod's init container renders the same configuration; this
    one runs it on listener ports and an admin socket of its own. Yields its client endpoint
    once its rate-limit cluster has a healthy host."""
    rendered = yaml.safe_load(config.read_text())
    ports = {}
    for listener in rendered["static_resources"]["listeners"]:
        ports[listener["name"]] = listener["address"]["socket_address"]["port_value"] = free_port()
    socket_dir = Path(tempfile.mkdtemp(prefix="ragmesh-envoy2-"))  # a short unix socket path
    rendered["admin"]["address"]["pipe"]["path"] = str(socket_dir / "admin.sock")
    second = config.with_name("envoy-2.yaml")
    second.write_text(yaml.safe_dump(rendered))
    argv = [str(installed.bin / "envoy"), "-c", str(second), "--disable-hot-restart"]
    with (logs / "envoy-2.log").open("wb") as log_file:
        popen = subprocess.Popen(
            with_hosts(argv, hosts), stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=installed.env(), cwd=installed.home,
        )  # fmt: skip
    process = ServerProcess(popen, "", logs / "envoy-2.log")
    try:
        stats = (
            f"http://127.0.0.1:{ports['admin_stats']}/stats"
            "?filter=^cluster%5C.ratelimit%5C.membership_healthy$"
        )
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while not _reads(stats).strip().endswith(": 1"):
            assert popen.poll() is None and time.monotonic() < deadline, process.log()[-3000:]
            time.sleep(0.25)
        yield f"127.0.0.1:{ports['client']}"
    finally:
        process.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


def _reads(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as page:  # nosec B310: loopback
            return str(page.read().decode())
    except OSError:
        return ""


def _openai_embeddings(endpoint: str, client: Path, api_key: str) -> None:
    """POST /v1/embeddings on Envoy's client listener reaches the adapter's pod, which calls
    the embeddings pods back through Envoy's internal listener."""
    context = ssl.create_default_context(cafile=str(client / "ca.crt"))
    context.load_cert_chain(str(client / "tls.crt"), str(client / "tls.key"))
    with httpx.Client(
        base_url=f"https://{endpoint}",
        verify=context,
        headers={"authorization": f"Bearer {api_key}"},
        timeout=60,
    ) as http:
        # Clients reach Envoy by its Service name, which its certificate carries.
        sni = {"sni_hostname": "envoy"}
        models = http.get("/v1/models", extensions=sni)
        assert models.status_code == 200, models.text
        model = models.json()["data"][0]["id"]
        body = {"model": model, "input": ["hello from kubernetes"], "encoding_format": "float"}
        response = http.post("/v1/embeddings", json=body, extensions=sni)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"][0]["embedding"]) == 384


def _envoy_metrics_only(metrics: str) -> None:
    """Envoy's metrics listener: its counters for Prometheus, no other admin page or action."""
    with urllib.request.urlopen(f"http://{metrics}/stats/prometheus", timeout=5) as page:  # nosec B310
        counters = page.read().decode()
    assert "envoy_cluster_upstream_rq" in counters
    # What the monitoring component's certificate alert reads (components/monitoring/rules.yaml).
    assert "envoy_server_days_until_first_cert_expiring" in counters
    for method, path in (
        ("POST", "/quitquitquit"),
        ("POST", "/logging?level=debug"),
        ("GET", "/config_dump"),
        ("GET", "/certs"),
        ("POST", "/stats/prometheus"),
    ):
        request = urllib.request.Request(f"http://{metrics}{path}", method=method, data=None)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)  # nosec B310
        assert refused.value.code == 403, (method, path)


async def _traffic(endpoint: str, client: Path, api_key: str) -> None:
    credentials = channel_credentials(client / "ca.crt", client / "tls.crt", client / "tls.key")
    async with grpc.aio.secure_channel(
        endpoint,
        credentials,
        # Clients reach Envoy by its Service name, which its certificate carries.
        options=[("grpc.ssl_target_name_override", "envoy")],
        interceptors=metadata_interceptors(api_key),
    ) as channel:
        embedded = await embeddings_grpc.EmbeddingsServiceStub(channel).Embed(
            embeddings_pb.EmbedRequest(inputs=["hello from kubernetes"]), timeout=60
        )
        assert len(embedded.embeddings[0].values) == 384
        searcher = search_grpc.SearchServiceStub(channel)
        await searcher.CreateCollection(search_pb.CreateCollectionRequest(name="k8s"), timeout=60)
        # Search embeds the documents through Envoy's internal listener.
        await searcher.UpsertDocuments(
            search_pb.UpsertDocumentsRequest(
                collection="k8s",
                documents=[search_pb.Document(id="1", text="Envoy retries idempotent calls.")],
            ),
            timeout=60,
        )
        found = await searcher.Search(
            search_pb.SearchRequest(collection="k8s", query="what does envoy retry?"), timeout=60
        )
        assert [hit.document_id for hit in found.hits][:1] == ["1"]
        # The coordinator calls search through Envoy's internal listener too.
        augmented = await coordinator_grpc.CoordinatorServiceStub(channel).AugmentQuery(
            coordinator_pb.AugmentQueryRequest(query="what does envoy retry?", collections=["k8s"]),
            timeout=60,
        )
        assert [p.document_id for p in augmented.passages][:1] == ["1"]


def test_manifests_run_from_the_installed_wheel(installed: Installed, tmp_path: Path) -> None:
    docs = render("base")
    secrets = _secrets(docs, tmp_path / "secrets")
    ports = PortMap()
    namespace = one(docs, "Namespace", "ragmesh")["metadata"]["name"]
    hosts = hosts_file(
        tmp_path / "hosts",
        [
            "envoy",
            "envoy-internal",
            *(f"{s}.{namespace}.svc.cluster.local" for s in (*SERVICES, *HELPERS)),
        ],
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    # The image converts the model for the fast runtimes at build time into /opt/ragmesh/models;
    # here the test suite's shared conversion folder (tests/conftest.py) stands for it.
    image_paths = {"/opt/ragmesh/models": os.environ["RAGMESH_EMBEDDINGS__RUNTIME_CACHE_DIR"]}

    with ExitStack() as stack:
        # CloudNativePG's place: the embedded PostgreSQL + pgvector, from the installed wheel.
        # Outside pytest's base directory: a concurrent pytest run resets that to mode 0700,
        # which the PostgreSQL user (not root) could then not traverse.
        postgres_state = Path(tempfile.mkdtemp(prefix="ragmesh-k8s-smoke-"))
        stack.callback(shutil.rmtree, postgres_state, ignore_errors=True)
        postgres = stack.enter_context(
            _process(installed, ["ragmesh", "serve", "postgres"], postgres_state, logs)
        )
        dsn = EmbeddedPostgres(postgres_state).dsn()
        wait_postgres(dsn, postgres)
        secret_values = {("ragmesh-db-app", "uri"): dsn}

        pods = {}
        # Pods start together, as in a cluster; within a pod, init containers run to completion
        # first (Envoy's renders its configuration) while the other pods load.
        ordered = sorted(
            containers(docs),
            key=lambda c: (c.pod["spec"].get("initContainers") is not None, not c.init),
        )
        for container in ordered:
            root = pod_root(container, tmp_path / "pods", secrets)
            env = {
                key: localize(value, container, root, ports, image_paths)
                for key, value in container.env(docs, secret_values).items()
            }
            argv = [localize(word, container, root, ports) for word in container.argv(env)]
            argv[0] = str(installed.bin / argv[0])
            process = stack.enter_context(
                started(
                    container, with_hosts(argv, hosts), installed.env(env), installed.home, logs
                )
            )
            if container.init:
                assert process.popen.wait(60) == 0, process.log()
            else:
                pods[container.deployment] = process
            if container.deployment == "envoy":
                envoy_root, envoy_env = root, env

        for name in ("startupProbe", "readinessProbe", "livenessProbe"):
            for process in pods.values():
                if name in process.container.spec:
                    probe(
                        process,
                        name,
                        ports,
                        STARTUP_TIMEOUT_S if name == "startupProbe" else PROBE_TIMEOUT_S,
                    )

        client = secrets["ragmesh-client-tls"]
        api_key = (secrets["ragmesh-api-keys"] / f"{DEFAULT_KEY_NAME}.key").read_text().strip()
        endpoint = f"127.0.0.1:{ports.port(8443)}"
        asyncio.run(_traffic(endpoint, client, api_key))
        _openai_embeddings(endpoint, client, api_key)
        limited_key = (secrets["ragmesh-api-keys"] / f"{LIMITED_KEY}.key").read_text().strip()
        envoy_argv = [
            localize(word, pods["envoy"].container, envoy_root, ports)
            for word in pods["envoy"].container.argv(envoy_env)
        ]
        envoy_config = Path(envoy_argv[envoy_argv.index("-c") + 1])
        with _second_envoy(envoy_config, hosts, installed, logs) as second_endpoint:
            asyncio.run(_rate_limited([endpoint, second_endpoint], client, limited_key))
        _envoy_metrics_only(f"127.0.0.1:{ports.port(9902)}")

        # Envoy's preStop hook (without its wait): its readiness probe fails from then on.
        envoy = pods["envoy"]
        pre_stop = envoy.container.spec["lifecycle"]["preStop"]["exec"]["command"]
        argv = [localize(word, envoy.container, envoy_root, ports) for word in pre_stop]
        argv[0] = str(installed.bin / argv[0])
        argv[argv.index("--seconds") + 1] = "0"
        hook = subprocess.run(
            argv, env=installed.env(envoy_env), cwd=installed.home, capture_output=True,
            text=True, timeout=60, check=False,
        )  # fmt: skip
        assert hook.returncode == 0, hook.stderr
        assert not probe_passes(envoy.container.spec["readinessProbe"], ports)

        # Graceful termination: every server drains and exits 0 on SIGTERM (all at once, as
        # when a namespace is deleted).
        servers = [p for p in pods.values() if p.container.deployment in SERVICES]
        for process in servers:
            process.popen.send_signal(signal.SIGTERM)
        for process in servers:
            assert process.stop() == 0, process.log()


@contextmanager
def _process(
    installed: Installed, argv: list[str], state: Path, logs: Path
) -> Iterator[ServerProcess]:
    """A process of the installed wheel (outside the checkout), stopped by its PID."""
    log_path = logs / f"{argv[-1]}.log"
    env = installed.env({"RAGMESH_STATE_DIR": str(state)})
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            [str(installed.bin / argv[0]), *argv[1:]], stdout=log_file,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=installed.home, env=env,
        )  # fmt: skip
    process = ServerProcess(popen, "", log_path)
    try:
        yield process
    finally:
        process.stop()
