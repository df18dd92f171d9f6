"""`ragmesh certs ...`: the mesh's certificates."""

from __future__ import annotations

import argparse
import sys

from services.config import load_settings
from services.mesh.certs import CertificateError, ensure_certificates, issue_client_certificate
from services.mesh.layout import layout_for


def register(subparsers: argparse._SubParsersAction) -> None:
    certs = subparsers.add_parser("certs", help="the mesh's CA and certificates")
    actions = certs.add_subparsers(dest="certs_action", required=True, metavar="ACTION")
    client = actions.add_parser(
        "client",
        help="issue a client certificate signed by the mesh CA",
        description="Write STATE_DIR/certs/clients/NAME.pem and NAME-key.pem (mode 0600): a"
        " certificate a client presents to Envoy's listener. Creates the CA first if needed.",
    )
    client.add_argument("name", help="lowercase letters, digits and dashes, at most 63 chars")
    client.set_defaults(handler=_issue_client)


def _issue_client(args: argparse.Namespace) -> int:
    certs_dir = layout_for(load_settings()).certs_dir
    try:
        paths = ensure_certificates(certs_dir)
        cert, key = issue_client_certificate(certs_dir, args.name)
    except (CertificateError, ValueError) as exc:
        print(f"ragmesh certs client: {exc}", file=sys.stderr)
        return 1
    print(f"certificate  {cert}\nkey          {key}\nCA           {paths.ca}")
    return 0
