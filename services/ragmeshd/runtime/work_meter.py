"""Limits that count work (issue 23): a key's rate is in units of work, not calls.

Units (docs/security.md): 1 text embedded, 1 KiB of documents written or uploaded, 1 search,
1 generated token. Envoy charges every call of a limited key 1 unit before it reaches a
replica (the rate-limit filter); the server then charges the rest of the call's work to the
same bucket, in the same rate-limit service, as the work happens: an Embed of 32 texts costs
32, an EmbedStream pays for each message as it arrives and stops when the key runs out, an
Ask pays for its answer's tokens as they are generated.

Only keys that carry a limit (rmkl_...) are metered; every other key costs nothing here.
When the rate-limit service cannot answer, metered work is refused unless
ratelimit.fail_open is set (the same rule as Envoy's, see envoy/ratelimit_filter.yaml).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import grpc

from ragmeshd import defaults
from ragmeshd.runtime.api import RATELIMIT_SERVICE
from ragmeshd.runtime.credentials import CredentialError
from ragmeshd.runtime.errors import RpcFailure
from ragmeshd.runtime.keystore import LIMITED_KEY_PREFIX, presented_key
from ragmeshd.runtime.rls_messages import OVER_LIMIT, RateLimitRequest, RateLimitResponse
from ragmeshd.runtime.tls import caller_credentials_for
from ragmeshd.settings import Settings
from ragmeshd.state import MeshLayout

_log = logging.getLogger("ragmesh.work_meter")
_METHOD = f"/{RATELIMIT_SERVICE}/ShouldRateLimit"
DOMAIN = "ragmesh"
_LIMITED = f"{LIMITED_KEY_PREFIX}_"


@dataclass(frozen=True)
class Charge:
    """The answer to one charge: allowed, or refused with when to retry."""

    allowed: bool
    retry_after_s: float = 0.0


class WorkMeter:
    """Charges units of work to the bucket of the key that asked for them."""

    def __init__(
        self,
        channel: grpc.aio.Channel | None,
        *,
        fail_open: bool = False,
        timeout_s: float = defaults.RATELIMIT_TIMEOUT_S,
    ) -> None:
        # None: no rate-limit service (a server started alone): nothing is metered.
        self._channel = channel
        self._fail_open = fail_open
        # How long a charge waits for the service (ratelimit.timeout_s, as long as Envoy's check).
        self._timeout_s = timeout_s
        self._call = (
            channel.unary_unary(
                _METHOD,
                request_serializer=RateLimitRequest.SerializeToString,
                response_deserializer=RateLimitResponse.FromString,
            )
            if channel is not None
            else None
        )

    async def charge(self, key: str | None, units: int) -> Charge:
        """Take `units` from the bucket of `key`; keys without a limit are never charged."""
        if self._call is None or units <= 0 or not (key or "").startswith(_LIMITED):
            return Charge(True)
        request = RateLimitRequest(domain=DOMAIN, hits_addend=units)
        request.descriptors.add().entries.add(key="x-api-key", value=key)
        try:
            response = await self._call(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as error:
            _log.warning("rate-limit service did not answer", extra={"code": error.code().name})
            return Charge(self._fail_open, retry_after_s=1.0)
        if response.overall_code != OVER_LIMIT:
            return Charge(True)
        statuses = list(response.statuses)
        wait = statuses[0].duration_until_reset.seconds if statuses else 1
        return Charge(False, retry_after_s=float(max(1, wait)))

    async def require(self, key: str | None, units: int, what: str) -> None:
        """Charge, or raise RESOURCE_EXHAUSTED saying what the units were for."""
        charged = await self.charge(key, units)
        if not charged.allowed:
            raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, spent_message(what, charged))

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


def spent_message(what: str, charged: Charge) -> str:
    return (
        f"this key's rate limit is spent ({what}; a unit is a text embedded, a KiB written, a"
        f" search or a generated token: docs/security.md); retry in"
        f" {math.ceil(charged.retry_after_s)} s"
    )


def work_meter_for(settings: Settings, service: str) -> WorkMeter:
    """The meter of `service`'s server: the rate-limit service at ratelimit.target (mutual TLS
    with the service's client certificate), by default its unix socket in the state folder."""
    layout = MeshLayout(settings.state_dir)
    target = settings.ratelimit.target or f"unix:{layout.ratelimit_socket}"
    remote = bool(settings.ratelimit.target)
    credentials = caller_credentials_for(settings, service) if remote else None
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    return WorkMeter(
        channel, fail_open=settings.ratelimit.fail_open, timeout_s=settings.ratelimit.timeout_s
    )


def presented_key_of(context: grpc.aio.ServicerContext) -> str | None:
    """The key a call presented (the auth interceptor has already checked it)."""
    try:
        return presented_key(context.invocation_metadata())
    except CredentialError:
        return None
