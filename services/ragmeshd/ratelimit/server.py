"""`ragmesh serve ratelimit`: Envoy's rate-limit service (envoy.service.ratelimit.v3).

Envoy's client listener asks it, before routing, about every call whose key may carry a limit:
any key text but `rmk_…` (ragmeshd/envoy/security.py). The descriptor is the presented
`authorization` or `x-api-key` value. It verifies the key against
the key store (so nobody can spend another key's budget by naming its id) and answers
OVER_LIMIT when that key's bucket is empty, with `retry-after` (seconds) and
`retry-after-ms` headers, which Envoy adds to its RESOURCE_EXHAUSTED reply (a gRPC client
reads them as trailing metadata). Calls without a key or with a key that has no limit are
let through: the replicas refuse bad keys themselves.

One process for the mesh, so a key's limit holds across every replica. Under `ragmesh up` it
listens on a unix socket in STATE_DIR/run (mode 0700 folder), which only Envoy, as the same
user, reaches. On Kubernetes (RAGMESH_RATELIMIT__LISTEN, one pod that every Envoy pod calls)
it listens on a TCP port with mutual TLS and answers Envoy's client certificate only: the
descriptors carry API keys.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import grpc

from ragmeshd.identities import ENVOY_UPSTREAM, identity_uri
from ragmeshd.ratelimit.buckets import KeyBuckets
from ragmeshd.runtime.audit import audit
from ragmeshd.runtime.auth import SERVICE_PEER_PREFIX, KeyVerifier
from ragmeshd.runtime.credentials import CredentialError, single_credential
from ragmeshd.runtime.keystore import KeyStore
from ragmeshd.runtime.rls_messages import (
    METHOD,
    OK,
    OVER_LIMIT,
    SECOND,
    SERVICE,
    RateLimitRequest,
    RateLimitResponse,
)
from ragmeshd.runtime.server import GrpcServer, StartupError
from ragmeshd.runtime.tls import peer_uris, server_credentials_for
from ragmeshd.settings import Settings
from ragmeshd.state import MeshLayout

_log = logging.getLogger("ragmesh.ratelimit")

# The descriptor keys Envoy sends (ragmeshd/envoy/security.py sets them).
KEY_DESCRIPTORS = ("authorization", "x-api-key")
# Over TLS, the only certificate admitted: the one Envoy presents to upstreams.
ENVOY_PEER = identity_uri("envoy", ENVOY_UPSTREAM)
# The name of this service's certificate (Kubernetes: ratelimit.ragmesh.internal).
SERVICE_NAME = "ratelimit"


def ratelimit_socket(state_dir: Path) -> Path:
    """The unix socket the rate-limit service listens on and Envoy calls."""
    return MeshLayout(state_dir).ratelimit_socket


class KeyRateLimiter:
    """Decides ShouldRateLimit calls from the key store and one token bucket per key."""

    def __init__(
        self, verifier: KeyVerifier, buckets: KeyBuckets | None = None, *, envoy_only: bool = False
    ) -> None:
        self._verifier = verifier
        self._buckets = buckets or KeyBuckets()
        # Under mTLS: refuse any caller but Envoy and the mesh's services, which charge work
        # to the bucket (runtime/work_meter.py): a user certificate of the same CA must not
        # learn whether a key is valid, nor spend its budget.
        self._envoy_only = envoy_only

    async def should_rate_limit(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        uris = peer_uris(context)
        admitted = ENVOY_PEER in uris or any(uri.startswith(SERVICE_PEER_PREFIX) for uri in uris)
        if self._envoy_only and not admitted:
            _log.warning("caller refused", extra={"peer": context.peer()})
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "only Envoy may call this")
        return self.decide_request(request)

    def decide_request(self, request: Any) -> Any:
        """The answer to one RateLimitRequest about the call's one credential. Envoy refuses a
        call with more than one before it asks (runtime/credentials.py); if one still arrives
        here, it is over the limit: no decoy header may choose which key is charged."""
        hits = request.hits_addend or 1
        credentials = [
            (entry.key, entry.value)
            for descriptor in request.descriptors
            for entry in descriptor.entries
            if entry.key in KEY_DESCRIPTORS
        ]
        if not credentials:
            return RateLimitResponse(overall_code=OK)
        try:
            presented = single_credential(credentials)
        except CredentialError:
            return RateLimitResponse(overall_code=OVER_LIMIT)
        return self.decide(presented or "", hits)

    def decide(self, presented: str, hits: int = 1) -> Any:
        stored = self._verifier.authenticate(presented)
        limit = stored.rate_limit if stored is not None and stored.usable() else None
        if stored is None or limit is None:
            return RateLimitResponse(overall_code=OK)
        decision = self._buckets.take(stored.key_id, limit, hits)
        response = RateLimitResponse(overall_code=OK if decision.allowed else OVER_LIMIT)
        status = response.statuses.add(
            code=OK if decision.allowed else OVER_LIMIT, limit_remaining=decision.remaining
        )
        status.current_limit.requests_per_unit = max(1, round(limit.per_second))
        status.current_limit.unit = SECOND
        if decision.allowed:
            return response
        # HTTP's retry-after is whole seconds; retry-after-ms says it exactly.
        wait_ms = max(1, math.ceil(decision.retry_after_s * 1000))
        wait_s = math.ceil(wait_ms / 1000)
        status.duration_until_reset.seconds = wait_s
        response.response_headers_to_add.add(key="retry-after", value=str(wait_s))
        response.response_headers_to_add.add(key="retry-after-ms", value=str(wait_ms))
        audit(
            "call refused",
            reason="over its rate limit",
            key_id=stored.key_id,
            retry_after_ms=wait_ms,
            per_second=limit.per_second,
        )
        return response

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                METHOD: grpc.unary_unary_rpc_method_handler(
                    self.should_rate_limit,
                    request_deserializer=RateLimitRequest.FromString,
                    response_serializer=RateLimitResponse.SerializeToString,
                )
            },
        )


async def serve_ratelimit(settings: Settings) -> int:
    """Run the rate-limit service until SIGTERM/SIGINT; its exit code."""
    listen = settings.ratelimit.listen
    credentials = None
    if listen:
        if settings.mesh.tls and not settings.mounted_certs.server_dir:
            raise StartupError(
                "the rate-limit service on a TCP port (RAGMESH_RATELIMIT__LISTEN) serves a"
                " mounted certificate: set RAGMESH_MOUNTED_CERTS__SERVER_DIR"
            )
        credentials = server_credentials_for(settings, SERVICE_NAME)
    else:
        socket = ratelimit_socket(settings.state_dir)
        socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        socket.unlink(missing_ok=True)
        listen = f"unix:{socket}"
    server = GrpcServer(
        "ratelimit",
        listen,
        settings.server,
        health_names=[SERVICE],
        credentials=credentials,
        health_listen=settings.server.health_listen,
    )
    # Envoy's access log already has a line per client call (with the key id); one more per
    # rate-limit check would double the log for nothing.
    logging.getLogger("ragmesh.rpc").setLevel(logging.WARNING)
    verifier = KeyVerifier(KeyStore(MeshLayout(settings.state_dir).keys_dir))
    limiter = KeyRateLimiter(verifier, envoy_only=credentials is not None)
    server.grpc.add_generic_rpc_handlers([limiter.handler()])
    await server.start()

    async def ready() -> None:
        return None

    return await server.run(ready())
