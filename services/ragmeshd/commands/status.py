"""`ragmesh status`: health of every replica and Envoy's per-cluster counters."""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.error

from grpc_health.v1 import health_pb2

from ragmeshd.envoy.admin import CLUSTER_COUNTERS, cluster_stats
from ragmeshd.runtime.health_client import check_health
from ragmeshd.runtime.tls import channel_credentials, mesh_certificates
from ragmeshd.settings import Settings, load_settings
from ragmeshd.state import MeshLayout
from ragmeshd.supervisor.plan import MeshState


def register(subparsers: argparse._SubParsersAction) -> None:
    status = subparsers.add_parser(
        "status",
        help="health of every service replica and Envoy's counters",
        description="Reads STATE_DIR/mesh.json (written by a running `ragmesh up`), asks each"
        " replica for its grpc.health.v1 status over mTLS, shows every process's pid, how often"
        " `up` restarted it and how it last exited, and prints Envoy's per-cluster"
        " requests, retries, ejections and health-check failures. Exits 1 if anything is"
        " not serving.",
    )
    status.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    settings = load_settings()
    state_path = MeshLayout(settings.state_dir).mesh_state
    if not state_path.exists():
        print(f"no running mesh: {state_path} does not exist (start one with `ragmesh up`)")
        return 1
    return asyncio.run(report(settings, MeshState.read(state_path)))


async def report(settings: Settings, state: MeshState) -> int:
    certs = mesh_certificates(settings)
    credentials = channel_credentials(certs.ca, certs.envoy_upstream.cert, certs.envoy_upstream.key)
    statuses = await asyncio.gather(
        *(
            check_health(
                replica.target,
                replica.grpc_service,
                credentials=credentials,
                server_name_of=replica.service,
            )
            for replica in state.replicas
        )
    )
    healthy = True
    health_by_name = {}
    for replica, status in zip(state.replicas, statuses, strict=True):
        health_by_name[replica.name] = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        healthy &= status == health_pb2.HealthCheckResponse.SERVING
    address_by_name = {replica.name: replica.target for replica in state.replicas}
    # Replicas first, then the other children (PostgreSQL, Envoy).
    names = [*address_by_name, *(name for name in state.pids if name not in address_by_name)]
    print(f"{'process':<18} {'address':<18} {'health':<12} {'pid':>8} {'restarts':>9}  last exit")
    for name in names:
        print(
            f"{name:<18} {address_by_name.get(name, '-'):<18}"
            f" {health_by_name.get(name, '-'):<12} {state.pids.get(name, '-'):>8}"
            f" {state.restarts.get(name, 0):>9}  {state.last_exit.get(name) or '-'}"
        )

    clusters = list(dict.fromkeys(replica.service for replica in state.replicas))
    # Envoy's admin is a unix socket under `up`; an older state file names its TCP address.
    admin = f"unix:{state.admin_socket}" if state.admin_socket else state.admin_listen
    print(f"\nEnvoy (admin {admin}, clients on {state.client_listen})")
    try:
        stats = await cluster_stats(admin, clusters)
    except (urllib.error.URLError, OSError) as exc:
        print(f"  Envoy's admin interface does not answer: {exc}", file=sys.stderr)
        return 1
    labels = list(CLUSTER_COUNTERS.values())
    print(f"{'cluster':<14}" + "".join(f"{label:>{len(label) + 2}}" for label in labels))
    for cluster in clusters:
        values = stats.get(cluster, {})
        cells = (f"{values.get(label, 0):>{len(label) + 2}}" for label in labels)
        print(f"{cluster:<14}" + "".join(cells))
    return 0 if healthy else 1
