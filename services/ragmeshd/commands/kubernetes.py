"""`ragmesh kubernetes ...`: what the pods of deploy/kubernetes/ run besides the servers."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ragmeshd.commands.convention import parse_duration
from ragmeshd.envoy.admin import admin_post
from ragmeshd.envoy.config import validate_config
from ragmeshd.envoy.kubernetes import (
    ADMIN_SOCKET,
    CLUSTER_DOMAIN,
    DEFAULT_NAMESPACE,
    METRICS_LISTEN,
    METRICS_PATH,
    PROBE_LISTEN,
    READY_PATH,
    kubernetes_topology,
    write_kubernetes_config,
)
from ragmeshd.envoy.topology import EnvoyConfigError
from ragmeshd.settings import load_settings

# How long Envoy keeps serving open connections after it stops accepting new ones, when its pod
# is stopped (the pod's terminationGracePeriodSeconds leaves room for it).
ENVOY_DRAIN_S = 10.0


def register(subparsers: argparse._SubParsersAction) -> None:
    kubernetes = subparsers.add_parser(
        "kubernetes", help="helpers the Kubernetes manifests run (deploy/kubernetes/)"
    )
    actions = kubernetes.add_subparsers(dest="kubernetes_action", required=True, metavar="ACTION")

    config = actions.add_parser(
        "envoy-config",
        help="render Envoy's configuration for a Kubernetes namespace",
        description="Write Envoy's bootstrap (and its SDS files beside it, in sds/) for the"
        " mesh in NAMESPACE: one cluster per service, hosts resolved per pod through each"
        " service's headless Service, ports from RAGMESH_<SERVICE>__LISTEN, certificates from"
        " RAGMESH_MOUNTED_CERTS__SERVER_DIR/CLIENT_DIR. Envoy's init container runs it.",
    )
    config.add_argument("--namespace", default=DEFAULT_NAMESPACE)
    config.add_argument(
        "--cluster-domain",
        default=CLUSTER_DOMAIN,
        help="the cluster's DNS domain, as the kubelet's --cluster-domain"
        f" (default {CLUSTER_DOMAIN})",
    )
    config.add_argument("--out", required=True, type=Path, help="the bootstrap file to write")
    config.add_argument(
        "--probe-listen",
        default=PROBE_LISTEN,
        help=f"plaintext listener answering GET {READY_PATH} for the kubelet"
        f" (default {PROBE_LISTEN})",
    )
    config.add_argument(
        "--metrics-listen",
        default=METRICS_LISTEN,
        help=f"plaintext listener answering GET {METRICS_PATH} (Envoy's counters) and nothing"
        f" else (default {METRICS_LISTEN})",
    )
    config.add_argument(
        "--admin-socket",
        default=ADMIN_SOCKET,
        type=Path,
        help=f"Envoy's admin interface, a 0600 unix socket (default {ADMIN_SOCKET})",
    )
    config.add_argument(
        "--validate", action="store_true", help="also check it with `envoy --mode validate`"
    )
    config.set_defaults(handler=_envoy_config)
    _register_drain(actions)


def _register_drain(actions: argparse._SubParsersAction) -> None:
    drain = actions.add_parser(
        "drain-envoy",
        help="drain Envoy before its pod stops (the container's preStop hook)",
        description="Through Envoy's admin interface: fail its readiness (GET /ready on the"
        " probe listener answers 503, so the pod leaves its Service), drain its listeners"
        " gracefully (no new connections, open ones close as their calls finish), then wait"
        " --wait so calls in flight complete before Kubernetes sends SIGTERM.",
    )
    drain.add_argument(
        "--wait",
        dest="seconds",
        type=parse_duration,
        default=ENVOY_DRAIN_S,
        metavar="DURATION",
        help=f"how long calls in flight may take to finish (default {ENVOY_DRAIN_S:g}s)",
    )
    # The older spelling, a bare number of seconds (manifests already deployed use it).
    drain.add_argument("--seconds", dest="seconds", type=float, help=argparse.SUPPRESS)
    drain.add_argument(
        "--admin-socket",
        default=ADMIN_SOCKET,
        help=f"Envoy's admin socket, as given to envoy-config (default {ADMIN_SOCKET})",
    )
    drain.set_defaults(handler=_drain_envoy)


def _envoy_config(args: argparse.Namespace) -> int:
    settings = load_settings()
    out: Path = args.out
    try:
        topology = kubernetes_topology(
            settings,
            namespace=args.namespace,
            cluster_domain=args.cluster_domain,
            sds_dir=out.parent / "sds",
            admin_socket=args.admin_socket,
        )
        write_kubernetes_config(topology, out, args.probe_listen, args.metrics_listen)
        if args.validate:
            validate_config(out)
    except (ValueError, EnvoyConfigError) as exc:
        print(f"ragmesh kubernetes envoy-config: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


def _drain_envoy(args: argparse.Namespace) -> int:
    admin = f"unix:{args.admin_socket}"
    try:
        # First fail the readiness probe (the pod leaves its Service's endpoints), then stop
        # taking connections while those open finish their calls.
        admin_post(admin, "/healthcheck/fail")
        admin_post(admin, "/drain_listeners?graceful")
    except OSError as exc:
        print(f"ragmesh kubernetes drain-envoy: {admin}: {exc}", file=sys.stderr)
        return 1
    time.sleep(args.seconds)
    return 0
