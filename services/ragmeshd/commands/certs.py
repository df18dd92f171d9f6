"""`ragmesh certs ...`: the mesh's certificates."""

from __future__ import annotations

import argparse
import sys

from ragmeshd.commands.convention import settings_or_exit
from ragmeshd.pki.certs import CertificateError, ensure_certificates, issue_client_certificate
from ragmeshd.pki.crl import crl_path, revoke_client
from ragmeshd.pki.passphrase import use_settings_passphrase
from ragmeshd.pki.renewal import RENEW_WITHIN_DAYS, renew_certificates, serial_of
from ragmeshd.runtime.audit import open_audit_file
from ragmeshd.runtime.logs import JsonFormatter
from ragmeshd.runtime.private_files import forbid_inspection
from ragmeshd.settings import Settings
from ragmeshd.state import MeshLayout


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
    renew = actions.add_parser(
        "renew",
        help="renew the mesh's leaf certificates (a running mesh picks them up, no restart)",
        description="Reissue Envoy's, every service's and the default client's certificate"
        " (new key and serial, same names, same CA) when it expires within --within-days."
        " Envoy and the servers of a running mesh serve the new ones on new connections.",
    )
    renew.add_argument(
        "--within-days",
        type=float,
        default=RENEW_WITHIN_DAYS,
        help=f"renew what expires within this many days (default {RENEW_WITHIN_DAYS})",
    )
    renew.add_argument("--all", action="store_true", help="renew every certificate now")
    renew.set_defaults(handler=_renew)
    revoke = actions.add_parser(
        "revoke",
        help="revoke a client certificate: Envoy refuses it within seconds, no restart",
        description="Add clients/NAME.pem's serial to the mesh CA's revocation list"
        " (STATE_DIR/certs/crl.pem, which a running Envoy re-reads) and move the certificate"
        " and its key to clients/revoked/, so NAME can be issued again. Needs the CA key.",
    )
    revoke.add_argument("name", help="the name given to `ragmesh certs client NAME`")
    revoke.set_defaults(handler=_revoke)


def _issue_client(args: argparse.Namespace) -> int:
    settings = _settings_with_ca_passphrase()
    certs_dir = MeshLayout(settings.state_dir).certs_dir
    try:
        paths = ensure_certificates(certs_dir)
        cert, key = issue_client_certificate(certs_dir, args.name)
    except (CertificateError, ValueError) as exc:
        print(f"ragmesh certs client: {exc}", file=sys.stderr)
        return 1
    print(f"certificate  {cert}\nkey          {key}\nCA           {paths.ca}")
    return 0


def _renew(args: argparse.Namespace) -> int:
    settings = _settings_with_ca_passphrase()
    certs_dir = MeshLayout(settings.state_dir).certs_dir
    within = float("inf") if args.all else args.within_days
    try:
        renewed = renew_certificates(certs_dir, within_days=within)
    except (CertificateError, ValueError) as exc:
        print(f"ragmesh certs renew: {exc}", file=sys.stderr)
        return 1
    for cert in renewed:
        print(f"renewed  {cert}  serial {serial_of(cert):x}")
    if not renewed:
        print(f"nothing expires within {args.within_days:g} days; --all renews every certificate")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    settings = _settings_with_ca_passphrase()
    certs_dir = MeshLayout(settings.state_dir).certs_dir
    try:
        serial = revoke_client(certs_dir, args.name)
    except (CertificateError, ValueError) as exc:
        print(f"ragmesh certs revoke: {exc}", file=sys.stderr)
        return 1
    print(f"revoked  {args.name}  serial {serial:x}  (CRL {crl_path(certs_dir)})")
    return 0


def _settings_with_ca_passphrase() -> Settings:
    """The settings, with the CA key's passphrase usable by this process only: it is made
    non-dumpable first, so no other process of the user can read the passphrase from it."""
    forbid_inspection()
    settings = settings_or_exit()
    # Certificate changes are audit events: STATE_DIR/logs/audit.log (runtime/audit.py).
    open_audit_file(MeshLayout(settings.state_dir).logs_dir, JsonFormatter("certs"))
    use_settings_passphrase(settings)
    return settings
