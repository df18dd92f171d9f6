"""`ragmesh status`: health of every replica and Envoy's per-cluster counters."""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.error
from typing import Any

from grpc_health.v1 import health_pb2

from ragmeshd.commands.convention import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNREACHABLE,
    CommandError,
    add_json_option,
    print_json,
    settings_or_exit,
)
from ragmeshd.envoy.admin import CLUSTER_COUNTERS, cluster_stats
from ragmeshd.runtime.health_client import check_health
from ragmeshd.runtime.tls import channel_credentials, mesh_certificates
from ragmeshd.settings import Settings
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
        " not serving, 3 if no mesh runs. --json prints the same as one JSON document.",
    )
    add_json_option(status)
    status.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    state_path = MeshLayout(settings.state_dir).mesh_state
    if not state_path.exists():
        raise CommandError(
            f"no running mesh: {state_path} does not exist (start one with `ragmesh up`)",
            EXIT_UNREACHABLE,
        )
    document = asyncio.run(report(settings, MeshState.read(state_path)))
    if args.json:
        print_json(document)
    else:
        print_report(document)
    if document["envoy"]["error"]:
        print(
            f"Envoy's admin interface does not answer: {document['envoy']['error']}",
            file=sys.stderr,
        )
    return EXIT_OK if document["healthy"] else EXIT_FAILURE


async def report(settings: Settings, state: MeshState) -> dict[str, Any]:
    """Every process (health, pid, restarts, last exit) and Envoy's counters per cluster."""
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
    serving = health_pb2.HealthCheckResponse.SERVING
    health_by_name = {
        replica.name: health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        for replica, status in zip(state.replicas, statuses, strict=True)
    }
    address_by_name = {replica.name: replica.target for replica in state.replicas}
    # Replicas first, then the other children (PostgreSQL, Envoy).
    names = [*address_by_name, *(name for name in state.pids if name not in address_by_name)]
    processes = [
        {
            "name": name,
            "address": address_by_name.get(name),
            "health": health_by_name.get(name),
            "pid": state.pids.get(name),
            "restarts": state.restarts.get(name, 0),
            "last_exit": state.last_exit.get(name),
        }
        for name in names
    ]
    clusters = list(dict.fromkeys(replica.service for replica in state.replicas))
    # Envoy's admin is a unix socket under `up`; an older state file names its TCP address.
    admin = f"unix:{state.admin_socket}" if state.admin_socket else state.admin_listen
    envoy: dict[str, Any] = {"admin": admin, "clients": state.client_listen, "error": None}
    try:
        stats = await cluster_stats(admin, clusters)
        envoy["clusters"] = {cluster: stats.get(cluster, {}) for cluster in clusters}
    except (urllib.error.URLError, OSError) as exc:
        envoy["error"] = str(exc)
    healthy = all(status == serving for status in statuses) and envoy["error"] is None
    return {"healthy": healthy, "processes": processes, "envoy": envoy}


def print_report(document: dict[str, Any]) -> None:
    print(f"{'process':<18} {'address':<18} {'health':<12} {'pid':>8} {'restarts':>9}  last exit")
    for process in document["processes"]:
        print(
            f"{process['name']:<18} {process['address'] or '-':<18}"
            f" {process['health'] or '-':<12} {process['pid'] or '-':>8}"
            f" {process['restarts']:>9}  {process['last_exit'] or '-'}"
        )
    envoy = document["envoy"]
    print(f"\nEnvoy (admin {envoy['admin']}, clients on {envoy['clients']})")
    if envoy["error"]:
        return
    labels = list(CLUSTER_COUNTERS.values())
    print(f"{'cluster':<14}" + "".join(f"{label:>{len(label) + 2}}" for label in labels))
    for cluster, values in envoy["clusters"].items():
        cells = (f"{values.get(label, 0):>{len(label) + 2}}" for label in labels)
        print(f"{cluster:<14}" + "".join(cells))
