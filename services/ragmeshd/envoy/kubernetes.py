"""The mesh's topology on Kubernetes (deploy/kubernetes/): one Envoy configuration rendered by
the same code as `ragmesh up`'s, for pods instead of local processes.

    topology = kubernetes_topology(settings, namespace="ragmesh")
    write_config(topology, Path("/etc/ragmesh/envoy/envoy.yaml"))

Each service has a headless Service of its own name, so `<service>.<namespace>.svc.<domain>`
resolves to the address of every ready pod: Envoy's STRICT_DNS clusters make one host per pod,
and its health checks and outlier ejection act on each pod. The ports are the services' own
settings (`RAGMESH_<SERVICE>__LISTEN`), the same values the Deployments give the servers.
Certificates are cert-manager Secrets mounted where RAGMESH_MOUNTED_CERTS__* say, served
through SDS so a renewal needs no restart.

As under `ragmesh up`: /v1/embeddings, /v1/models and /v1/chat/completions go to the
OpenAI-compatible adapter's pods; per-key rate limits are asked of the one rate-limit pod
(every Envoy pod asks the same one, so a key's limit holds across them); Envoy's admin is on
a 0600 unix socket in the pod, its read-only pages on loopback, and the pod's network sees
only /stats/prometheus (for Prometheus) and the probe listener.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from ragmeshd.envoy.config import write_config
from ragmeshd.envoy.security import ADMIN_CLUSTER
from ragmeshd.envoy.topology import HttpGateway, HttpUpstream, Topology, UpstreamCluster
from ragmeshd.envoy.yaml_templates import render
from ragmeshd.settings import Settings
from ragmeshd.state import CertificatePaths, Identity
from ragmeshd.supervisor.http_adapter import OPENAI
from ragmeshd.supervisor.plan import RETRY_METHODS, grpc_service_name, split_address

DEFAULT_NAMESPACE = "ragmesh"
# The kubelet's default --cluster-domain; `envoy-config --cluster-domain` for another.
CLUSTER_DOMAIN = "cluster.local"
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
# Kubernetes serves the services in this order; Envoy needs all of them.
SERVICES = ("embeddings", "search", "coordinator")
# The mesh's own model service (components/llm-local): a cluster of its own when the
# coordinator's LOCAL route goes through Envoy to it (RAGMESH_COORDINATOR__LLM_TARGET set).
LLM = "llm"
# Envoy's plaintext probe listener (envoy/probe_listener.yaml) and the path it answers.
PROBE_LISTEN = "0.0.0.0:8099"
READY_PATH = "/ready"
# Envoy's admin socket in its pod (an emptyDir only the Envoy container mounts), and the
# plaintext listener that forwards GET /stats/prometheus, and nothing else, to it.
ADMIN_SOCKET = "/run/envoy/admin.sock"
METRICS_LISTEN = "0.0.0.0:9902"
METRICS_PATH = "/stats/prometheus"
# The rate-limit service's headless Service and the OpenAI adapter's.
RATELIMIT = "ratelimit"


def service_host(service: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> str:
    """The DNS name of a service's headless Service: one address per ready pod."""
    return f"{service}.{namespace}.svc.{domain}"


def mounted_envoy_certificates(settings: Settings) -> CertificatePaths:
    """Envoy's certificates in cert-manager's Secret layout: its server certificate (and the
    CA, ca.crt) under mounted_certs.server_dir, its client certificate under client_dir."""
    mounted = settings.mounted_certs
    if not mounted.server_dir or not mounted.client_dir:
        raise ValueError(
            "Envoy on Kubernetes needs RAGMESH_MOUNTED_CERTS__SERVER_DIR and"
            " RAGMESH_MOUNTED_CERTS__CLIENT_DIR (the mounted cert-manager Secrets)"
        )
    server, client = Path(mounted.server_dir), Path(mounted.client_dir)
    envoy = Identity(server / "tls.crt", server / "tls.key")
    upstream = Identity(client / "tls.crt", client / "tls.key")
    # `client` (the user's certificate) is not Envoy's to hold; the renderer never reads it.
    return CertificatePaths(
        ca=server / "ca.crt", envoy=envoy, envoy_upstream=upstream, client=upstream
    )


def kubernetes_topology(
    settings: Settings,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    sds_dir: Path,
    admin_socket: Path = Path(ADMIN_SOCKET),
    cluster_domain: str = CLUSTER_DOMAIN,
) -> Topology:
    """Envoy's topology for a Kubernetes namespace: one cluster per service, its hosts the
    pods behind the service's headless Service (`<service>.<namespace>.svc.<cluster_domain>`,
    the kubelet's --cluster-domain); the same for the OpenAI adapter and the rate-limit
    service."""
    if not _DNS_NAME.match(cluster_domain):
        raise ValueError(f"--cluster-domain {cluster_domain!r} is not a DNS domain")
    if not settings.ratelimit.listen:
        raise ValueError(
            "Envoy on Kubernetes needs RAGMESH_RATELIMIT__LISTEN (the rate-limit service's"
            " port, which Envoy calls for per-key limits)"
        )
    clusters = _service_clusters(settings, namespace, cluster_domain)
    mesh = settings.mesh
    return Topology(
        clusters=clusters,
        certificates=mounted_envoy_certificates(settings),
        client_listener=split_address(mesh.client_listen),
        internal_listener=split_address(mesh.internal_listen),
        admin=split_address(mesh.admin_listen),
        admin_socket=admin_socket,
        otlp_endpoint=settings.telemetry.otlp_address,
        trace_sampling_ratio=settings.telemetry.sampling_ratio,
        ratelimit_endpoint=(
            service_host(RATELIMIT, namespace, cluster_domain),
            split_address(settings.ratelimit.listen)[1],
        ),
        ratelimit_fail_open=settings.ratelimit.fail_open,
        ratelimit_timeout_s=settings.ratelimit.timeout_s,
        # HTTP/JSON for every RPC and the OpenAI-compatible paths on the client listener, as
        # under `ragmesh up`.
        http_gateway=HttpGateway(
            services=[cluster.grpc_service for cluster in clusters],
            adapters=[
                HttpUpstream(
                    OPENAI,
                    [
                        (
                            service_host(OPENAI, namespace, cluster_domain),
                            split_address(settings.openai.listen)[1],
                        )
                    ],
                )
            ],
        ),
        sds_dir=sds_dir,
        internal_listener_remote=True,
    )


def _service_clusters(
    settings: Settings, namespace: str, cluster_domain: str
) -> list[UpstreamCluster]:
    """One STRICT_DNS cluster per service over its headless Service."""
    clusters = []
    services = [*SERVICES, LLM] if settings.coordinator.llm_target else list(SERVICES)
    for service in services:
        grpc_service = grpc_service_name(service)
        if grpc_service is None:
            raise ValueError(f"this build has no API for {service}")
        _, port = split_address(getattr(settings, service).listen)
        clusters.append(
            UpstreamCluster(
                name=service,
                grpc_service=grpc_service,
                endpoints=[(service_host(service, namespace, cluster_domain), port)],
                retry_methods=[f"/{grpc_service}/{m}" for m in RETRY_METHODS[service]],
                # No per-replica cap from the settings here: the pods behind the one DNS name
                # are not counted, so it would cap the whole service (envoy_limits' 512 stays).
            )
        )
    return clusters


def write_kubernetes_config(
    topology: Topology, path: Path, probe_listen: str, metrics_listen: str = METRICS_LISTEN
) -> Path:
    """Write Envoy's configuration for `topology` (and its SDS files), plus the plaintext
    probe listener on `probe_listen` for the kubelet and the /stats/prometheus listener on
    `metrics_listen` for Prometheus."""
    if topology.admin_socket is None:
        raise ValueError("Envoy's admin on Kubernetes is a unix socket (admin_socket)")
    write_config(topology, path)
    config = yaml.safe_load(path.read_text())
    (probe_host, probe_port), (metrics_host, metrics_port) = (
        split_address(probe_listen),
        split_address(metrics_listen),
    )
    taken = {topology.client_listener[1], topology.internal_listener[1], topology.admin[1]}
    if probe_port in taken or metrics_port in taken or probe_port == metrics_port:
        raise ValueError(
            f"the probe ({probe_listen}) and metrics ({metrics_listen}) listeners must use"
            f" ports of their own, not {sorted(taken)}"
        )
    config["static_resources"]["listeners"] += [
        render("probe_listener.yaml", address=probe_host, port=probe_port, ready_path=READY_PATH),
        render(
            "metrics_listener.yaml",
            address=metrics_host,
            port=metrics_port,
            path=METRICS_PATH,
            admin_cluster=ADMIN_CLUSTER,
        ),
    ]
    header = "# Rendered by `ragmesh kubernetes envoy-config`; do not edit.\n"
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(header + yaml.safe_dump(config, sort_keys=False, width=100))
    os.replace(temporary, path)
    return path
