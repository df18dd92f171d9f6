"""`ragmesh kubernetes ...`: what the pods of deploy/kubernetes/ run besides the servers."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from pathlib import Path

from services.config import load_settings
from services.mesh.envoy_admin import ADMIN_TIMEOUT_S
from services.mesh.envoy_config import EnvoyConfigError, validate_config, write_config
from services.mesh.kubernetes import DEFAULT_NAMESPACE, kubernetes_topology

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
    config.add_argument("--out", required=True, type=Path, help="the bootstrap file to write")
    config.add_argument(
        "--validate", action="store_true", help="also check it with `envoy --mode validate`"
    )
    config.set_defaults(handler=_envoy_config)

    drain = actions.add_parser(
        "drain-envoy",
        help="drain Envoy before its pod stops (the container's preStop hook)",
        description="Ask Envoy's admin interface to drain its listeners gracefully (no new"
        " connections, open ones are closed as their calls finish), then wait --seconds so"
        " calls in flight complete before Kubernetes sends SIGTERM.",
    )
    drain.add_argument("--seconds", type=float, default=ENVOY_DRAIN_S)
    drain.set_defaults(handler=_drain_envoy)


def _envoy_config(args: argparse.Namespace) -> int:
    settings = load_settings()
    out: Path = args.out
    try:
        topology = kubernetes_topology(
            settings, namespace=args.namespace, sds_dir=out.parent / "sds"
        )
        write_config(topology, out)
        if args.validate:
            validate_config(out)
    except (ValueError, EnvoyConfigError) as exc:
        print(f"ragmesh kubernetes envoy-config: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


def _drain_envoy(args: argparse.Namespace) -> int:
    admin = load_settings().mesh.admin_listen
    request = urllib.request.Request(
        f"http://{admin}/drain_listeners?graceful", data=b"", method="POST"
    )
    try:
        # A fixed http:// URL to Envoy's admin address from the settings (bandit B310).
        with urllib.request.urlopen(request, timeout=ADMIN_TIMEOUT_S):  # nosec B310
            pass
    except OSError as exc:
        print(f"ragmesh kubernetes drain-envoy: {admin}: {exc}", file=sys.stderr)
        return 1
    time.sleep(args.seconds)
    return 0
