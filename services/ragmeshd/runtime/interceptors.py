"""Server interceptors, applied in this order (outermost first):

0. TracingServerInterceptor (ragmeshd/runtime/tracing.py): a SERVER span per RPC, child of
   the caller's `traceparent`; every log line of the call carries its trace and span ids.
1. AuthInterceptor (ragmeshd/runtime/auth.py): refuses calls without a valid API key.
2. AccessLogInterceptor: takes the request id from `x-request-id` (or makes one) for every
   log line of the call and its outgoing calls, and logs one line per RPC with method,
   status code, duration and the API key's id.
3. MetricsInterceptor: grpc_server_started/handled_total and grpc_server_handling_seconds.
4. AdmissionInterceptor (ragmeshd/runtime/admission.py): refuses calls past the server's
   concurrency limit with RESOURCE_EXHAUSTED (logged and counted by the two above).
5. ErrorInterceptor: a request that does not parse becomes INVALID_ARGUMENT, and any
   unexpected exception INTERNAL carrying only an error id.

"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import grpc

from ragmeshd.runtime import metrics
from ragmeshd.runtime.context import REQUEST_ID_HEADER, new_request_id, request_id
from ragmeshd.runtime.error_interceptor import (
    ErrorInterceptor,
    _is_cancellation,
)
from ragmeshd.runtime.handlers import HEALTH_PREFIX, Behaviour, WrappingInterceptor
from ragmeshd.runtime.keystore import presented_key_id
from ragmeshd.runtime.tracing import TracingServerInterceptor
from ragmeshd.runtime.work_meter import presented_key_of

_log = logging.getLogger("ragmesh.rpc")


def _status_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    # Some grpc versions report the raw integer here.
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))


@dataclass(frozen=True)
class ObservedCall:
    """What an observing interceptor knows of an RPC: its full method and its kind."""

    method: str
    kind: str  # "unary" or "streaming" (the handler yields responses)

    @property
    def metric_labels(self) -> dict[str, str]:
        """ "/pkg.Service/Method" → the grpc_type, grpc_service and grpc_method labels."""
        _, service, name = (
            self.method.split("/", 2) if self.method.count("/") >= 2 else ("", "", self.method)
        )
        return {"grpc_type": self.kind, "grpc_service": service, "grpc_method": name}


class _ObservingInterceptor(WrappingInterceptor):
    """Base for interceptors that act when an RPC starts and when it ends (with its final
    status code and duration), whatever the kind of handler."""

    def started(self, call: ObservedCall, context: grpc.aio.ServicerContext) -> Any:
        """Called as the RPC's handler starts; what it returns is handed to `finished`.

        Whatever `finished` needs from the call's transport (its peer, its metadata) is read
        here. `finished` may run after the RPC is over: when a client leaves a stream, gRPC
        drops the handler's async generator and the event loop closes it later, and the
        call's core object may be gone by then; context.peer() at that point crashed the
        server (SIGSEGV, found by the fuzz suite with short deadlines on server streams).
        """
        return None

    def finished(self, call: ObservedCall, facts: Any, seconds: float, code: str) -> None:
        """Called once the handler has returned or raised, with what `started` returned."""

    def wrap(self, method: str, behaviour: Behaviour, yields: bool) -> Behaviour:
        call = ObservedCall(method, "streaming" if yields else "unary")

        def finish(
            context: grpc.aio.ServicerContext, facts: Any, started: float, cancelled: bool
        ) -> None:
            # context.code() is the status the handler set, kept in Python: safe to read late.
            code = "CANCELLED" if cancelled else _status_name(context)
            self.finished(call, facts, time.perf_counter() - started, code)

        if yields:

            async def observed_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                facts = self.started(call, context)
                started, cancelled = time.perf_counter(), False
                try:
                    async for response in behaviour(request, context):
                        yield response
                except BaseException as exc:
                    cancelled = _is_cancellation(exc)
                    raise
                finally:
                    finish(context, facts, started, cancelled)

            return observed_stream

        async def observed_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            facts = self.started(call, context)
            started, cancelled = time.perf_counter(), False
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                cancelled = _is_cancellation(exc)
                raise
            finally:
                finish(context, facts, started, cancelled)

        return observed_unary


class AccessLogInterceptor(_ObservingInterceptor):
    """Adopts the call's request id and logs one line per RPC: method, code, duration."""

    def started(self, call: ObservedCall, context: grpc.aio.ServicerContext) -> Any:
        # A context variable, so log lines and outgoing calls of this task carry it: the
        # caller's id (Envoy sets one on every request), or a new one.
        metadata = context.invocation_metadata()
        incoming = dict(metadata or ()).get(REQUEST_ID_HEADER)
        request_id.set(str(incoming) if incoming else new_request_id())
        # The key's id (never the key): which credential made the call.
        return {"peer": context.peer(), "key_id": presented_key_id(presented_key_of(context))}

    def finished(self, call: ObservedCall, facts: Any, seconds: float, code: str) -> None:
        # Health probes arrive every second from Envoy and `up`; keep them out of INFO.
        level = logging.DEBUG if call.method.startswith(HEALTH_PREFIX) else logging.INFO
        _log.log(
            level,
            "rpc finished",
            extra={
                "grpc_method": call.method,
                "grpc_code": code,
                "duration_ms": round(seconds * 1000, 3),
                **facts,
            },
        )


class MetricsInterceptor(_ObservingInterceptor):
    """Counts and times every RPC by service, method and final status code."""

    def started(self, call: ObservedCall, context: grpc.aio.ServicerContext) -> Any:
        metrics.GRPC_STARTED.labels(**call.metric_labels).inc()
        return None

    def finished(self, call: ObservedCall, facts: Any, seconds: float, code: str) -> None:
        metrics.GRPC_HANDLED.labels(**call.metric_labels, grpc_code=code).inc()
        metrics.GRPC_HANDLING_SECONDS.labels(**call.metric_labels).observe(seconds)


def server_interceptors(
    authentication: grpc.aio.ServerInterceptor | None,
    admission: grpc.aio.ServerInterceptor | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors of every ragmesh server, outermost first."""
    first = [authentication] if authentication is not None else []
    shedding = [admission] if admission is not None else []
    return [
        TracingServerInterceptor(),
        *first,
        AccessLogInterceptor(),
        MetricsInterceptor(),
        *shedding,
        ErrorInterceptor(),
    ]
