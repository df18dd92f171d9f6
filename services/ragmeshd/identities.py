"""The names ragmesh's certificates carry, shared by the code that issues them
(ragmeshd/pki/certs.py) and the code that checks them (ragmeshd/runtime: auth, tls).

A service's server certificate names `<service>.ragmesh.internal`; every certificate names its
holder with a SPIFFE-style URI SAN, `spiffe://ragmesh.internal/<kind>/<name>`.
"""

from __future__ import annotations

# Server certificates are issued for <service>.ragmesh.internal, the name Envoy verifies.
INTERNAL_DOMAIN = "ragmesh.internal"
ENVOY = "envoy"
# The client certificate Envoy presents to the services (not its server certificate).
ENVOY_UPSTREAM = "envoy-upstream"


def service_dns_name(service: str) -> str:
    """The DNS name a service's server certificate carries and Envoy verifies."""
    return f"{service}.{INTERNAL_DOMAIN}"


def identity_uri(kind: str, name: str) -> str:
    """The URI SAN naming a certificate's holder, e.g. spiffe://ragmesh.internal/service/search."""
    return f"spiffe://{INTERNAL_DOMAIN}/{kind}/{name}"
