"""The Envoy topology of the mesh `ragmesh up` runs: one cluster per planned service, the
listeners, the admin socket, the rate-limit service and the HTTP gateway, from the settings and
the plan alone (no side effects), so the launcher and the committed reference rendering
(envoy/reference/envoy.yaml, `python -m ragmeshd.supervisor.topology PATH`) are the same code.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ragmeshd.envoy.config import render_config
from ragmeshd.envoy.refusal_log import ENVOY_AUDIT_LOG
from ragmeshd.envoy.security import admin_socket
from ragmeshd.envoy.topology import HttpGateway, HttpUpstream, Topology, UpstreamCluster
from ragmeshd.settings import Settings
from ragmeshd.state import CertificatePaths, MeshLayout
from ragmeshd.supervisor.http_adapter import OPENAI
from ragmeshd.supervisor.plan import (
    RETRY_METHODS,
    Replica,
    available_services,
    envoy_max_requests,
    plan_replicas,
    split_address,
)


def runs_openai(services: Sequence[str]) -> bool:
    """The OpenAI-compatible adapter runs when what it calls does."""
    return {"embeddings", "coordinator"} <= set(services)


def mesh_topology(
    settings: Settings, replicas: Sequence[Replica], certs: CertificatePaths, layout: MeshLayout
) -> Topology:
    services = list(dict.fromkeys(replica.service for replica in replicas))
    clusters = []
    for service in services:
        own = [r for r in replicas if r.service == service]
        grpc_service = own[0].grpc_service
        clusters.append(
            UpstreamCluster(
                name=service,
                grpc_service=grpc_service,
                endpoints=[(r.host, r.port) for r in own],
                retry_methods=[f"/{grpc_service}/{m}" for m in RETRY_METHODS[service]],
                max_requests_per_replica=envoy_max_requests(settings, service),
            )
        )
    mesh = settings.mesh
    adapters = [HttpUpstream(OPENAI, [split_address(settings.openai.listen)])]
    return Topology(
        clusters=clusters,
        certificates=certs,
        client_listener=split_address(mesh.client_listen),
        internal_listener=split_address(mesh.internal_listen),
        admin=split_address(mesh.admin_listen),
        otlp_endpoint=settings.telemetry.otlp_address,
        # Admin on a 0600 unix socket; admin_listen serves its read-only pages only.
        admin_socket=admin_socket(settings.state_dir),
        ratelimit_socket=layout.ratelimit_socket,
        ratelimit_fail_open=settings.ratelimit.fail_open,
        ratelimit_timeout_s=settings.ratelimit.timeout_s,
        refusal_log=layout.log_path(ENVOY_AUDIT_LOG),
        trace_sampling_ratio=settings.telemetry.sampling_ratio,
        http_gateway=HttpGateway(
            services=[cluster.grpc_service for cluster in clusters],
            adapters=adapters if runs_openai(services) else [],
        ),
        # Certificates through SDS files: `ragmesh certs renew` needs no Envoy restart.
        sds_dir=layout.envoy_config.parent / "sds",
    )


def reference_config() -> str:
    """Envoy's configuration for `ragmesh up` with every default, state in `.ragmesh`: the
    rendering committed for readers (settings from defaults only, not the environment)."""
    settings = Settings.model_validate({"state_dir": ".ragmesh"})
    layout = MeshLayout(settings.state_dir)
    counts = dict.fromkeys(available_services(), 1)
    replicas = plan_replicas(settings, counts)
    rendered = render_config(mesh_topology(settings, replicas, layout.certificates(), layout))
    # Some paths are made absolute on the way; the reference shows them relative to where
    # `ragmesh up` runs, so it reads the same in every checkout.
    return rendered.replace(f"{Path.cwd()}/", "")


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(reference_config())
