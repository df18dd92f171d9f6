"""Envoy's certificates through file-based SDS, so renewed files are served without a restart.

Without SDS Envoy reads certificate files once. With it, each certificate and the trusted CA is
a Secret resource in a small file of its own (sds_dir/<name>.yaml) that names the PEM files;
Envoy watches the directory holding the PEM files (`watched_directory`) and, when a file there
is moved into place (`ragmesh certs renew`, or the kubelet's atomic update of a mounted
Secret), reads the pair again and uses it for new connections. A certificate whose key does
not match yet (one half of the pair replaced) is rejected and the previous pair stays in use.

`use_sds` turns the static TLS contexts of a rendered bootstrap into SDS references;
`sds_resources` is what the referenced files hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragmeshd.pki.crl import envoy_crl
from ragmeshd.state import CertificatePaths, Identity

# Secret names: Envoy's server certificate (both listeners), its client certificate towards
# the services, and the CA that every peer certificate must chain to.
SERVER_CERT_SDS = "envoy_server"
UPSTREAM_CERT_SDS = "envoy_upstream"
CA_SDS = "mesh_ca"
# The protobuf type of an SDS resource (a type name, not a credential: bandit B105).
_SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"  # nosec B105


def use_sds(bootstrap: dict[str, Any], sds_dir: Path) -> None:
    """Replace every listener's and cluster's certificate files by SDS references (in place)."""
    resources = bootstrap["static_resources"]
    for listener in resources["listeners"]:
        for chain in listener.get("filter_chains", []):
            _use_sds(chain.get("transport_socket"), SERVER_CERT_SDS, sds_dir)
    for cluster in resources["clusters"]:
        _use_sds(cluster.get("transport_socket"), UPSTREAM_CERT_SDS, sds_dir)


def sds_resources(certificates: CertificatePaths) -> dict[str, dict[str, Any]]:
    """The content of each SDS file, by secret name."""
    return {
        SERVER_CERT_SDS: _certificate_secret(SERVER_CERT_SDS, certificates.envoy),
        UPSTREAM_CERT_SDS: _certificate_secret(UPSTREAM_CERT_SDS, certificates.envoy_upstream),
        CA_SDS: _resources(
            {
                "name": CA_SDS,
                "validation_context": {
                    "trusted_ca": {"filename": str(certificates.ca)},
                    # Issue 10: the CA's revocation list, when there is one (`ragmesh certs
                    # revoke` replaces it in the watched folder: no restart).
                    **envoy_crl(certificates.ca),
                    "watched_directory": {"path": str(certificates.ca.parent)},
                },
            }
        ),
    }


def sds_path(sds_dir: Path, secret: str) -> Path:
    return sds_dir / f"{secret}.yaml"


def _use_sds(transport_socket: dict[str, Any] | None, cert_secret: str, sds_dir: Path) -> None:
    if not transport_socket or transport_socket.get("name") != "envoy.transport_sockets.tls":
        return
    context = transport_socket["typed_config"]["common_tls_context"]
    if context.pop("tls_certificates", None) is not None:
        context["tls_certificate_sds_secret_configs"] = [_reference(cert_secret, sds_dir)]
    validation = context.pop("validation_context", None)
    if validation is not None:
        # The CA comes from SDS; every other check (SAN matchers, CRLs) stays static.
        validation.pop("trusted_ca", None)
        context["combined_validation_context"] = {
            "default_validation_context": validation,
            "validation_context_sds_secret_config": _reference(CA_SDS, sds_dir),
        }


def _reference(secret: str, sds_dir: Path) -> dict[str, Any]:
    return {
        "name": secret,
        "sds_config": {
            "resource_api_version": "V3",
            "path_config_source": {"path": str(sds_path(sds_dir, secret))},
        },
    }


def _certificate_secret(name: str, identity: Identity) -> dict[str, Any]:
    return _resources(
        {
            "name": name,
            "tls_certificate": {
                "certificate_chain": {"filename": str(identity.cert)},
                "private_key": {"filename": str(identity.key)},
                # A move into this directory (an atomic replacement) triggers a reload.
                "watched_directory": {"path": str(identity.cert.parent)},
            },
        }
    )


def _resources(secret: dict[str, Any]) -> dict[str, Any]:
    return {"resources": [{"@type": _SECRET_TYPE, **secret}]}
