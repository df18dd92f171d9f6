"""OpenTelemetry traces across the mesh.

`configure_tracing` sets the process's TracerProvider when an OTLP endpoint is configured:
resource `service.name=ragmesh-<service>`, a ParentBased(TraceIdRatioBased(ratio)) sampler (a
call that arrives inside a trace follows its caller's decision) and a batch exporter of OTLP
over gRPC. Without an endpoint nothing is set and every span below is a no-op, yet the W3C
`traceparent` of an incoming call still reaches the calls it makes.

Servers get `TracingServerInterceptor` (outermost, so every log line of a call carries its
trace and span ids) and channels to other services `client_interceptors()`. Work inside a
call gets its own spans from `tracer`: "batch encode", "backend query", "llm call".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ragmeshd import __version__
from ragmeshd.runtime.handlers import Behaviour, wrap_handler

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from ragmeshd.settings import Settings

_log = logging.getLogger("ragmesh.tracing")

# Spans of ragmesh's own work; a proxy until (unless) configure_tracing sets a provider.
tracer = trace.get_tracer("ragmesh", __version__)

# Health probes arrive every second from Envoy and `up`: not worth a trace each.
_UNTRACED_PREFIXES = ("/grpc.health.v1.Health/",)

# The codes that mark a SERVER span as failed (OpenTelemetry's RPC conventions); the rest
# (NOT_FOUND, INVALID_ARGUMENT...) are the caller's problem, recorded only as the code.
_SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

_provider: TracerProvider | None = None


def configure_tracing(service: str, settings: Settings) -> None:
    """Export this process's spans to the configured OTLP collector; a no-op without one."""
    global _provider
    telemetry = settings.telemetry
    address = telemetry.otlp_address
    if address is None or _provider is not None:
        return
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    host, port = address
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"ragmesh-{service}", "service.version": __version__}
        ),
        sampler=ParentBased(TraceIdRatioBased(telemetry.sampling_ratio)),
        # Spans are flushed by shutdown_tracing on a graceful stop, not at interpreter exit.
        shutdown_on_exit=False,
    )
    exporter = OTLPSpanExporter(
        endpoint=f"http://{_bracketed(host)}:{port}",
        insecure=True,
        timeout=telemetry.export_timeout_s,
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=telemetry.max_queue_spans,
            schedule_delay_millis=telemetry.export_delay_ms,
            export_timeout_millis=int(telemetry.export_timeout_s * 1000),
        )
    )
    trace.set_tracer_provider(provider)
    _provider = provider
    _log.info(
        "tracing on",
        extra={
            "otlp_endpoint": f"{host}:{port}",
            "sampling_ratio": telemetry.sampling_ratio,
        },
    )


async def shutdown_tracing() -> None:
    """Send every finished span and stop exporting (a graceful stop's last step)."""
    global _provider
    provider, _provider = _provider, None
    if provider is not None:
        # Blocks for up to the export timeout: off the event loop.
        await asyncio.to_thread(provider.shutdown)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# --- server side ----------------------------------------------------------------------------


def _incoming_carrier(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's text metadata, for the W3C trace-context propagator."""
    carrier: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            carrier[key.lower()] = value
    return carrier


def _final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if code is not None:
        # Some grpc versions report the raw integer here.
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.OK


class TracingServerInterceptor(grpc.aio.ServerInterceptor):
    """A SERVER span per RPC, named `pkg.Service/Method`, child of the caller's W3C
    `traceparent` when the call carries one, with rpc.* attributes and the final status
    code. Outermost, so the access log and every other line of the call run inside it."""

    async def intercept_service(
        self, continuation: Any, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_UNTRACED_PREFIXES):
            return handler
        return wrap_handler(handler, method, self._wrap)

    def _wrap(self, method: str, behaviour: Behaviour, yields: bool) -> Behaviour:
        name = method.lstrip("/")
        service, _, rpc = name.partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}

        def start(context: grpc.aio.ServicerContext) -> trace.Span:
            return tracer.start_span(
                name,
                context=propagate.extract(_incoming_carrier(context)),
                kind=SpanKind.SERVER,
                attributes=attributes,
            )

        def finish(
            span: trace.Span, context: grpc.aio.ServicerContext, error: BaseException | None
        ) -> None:
            code = _final_code(context, error)
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in _SERVER_ERROR_CODES:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()

        if yields:

            async def traced_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                span = start(context)
                error: BaseException | None = None
                try:
                    with _current(span):
                        async for response in behaviour(request, context):
                            yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    finish(span, context, error)

            return traced_stream

        async def traced_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            span = start(context)
            error: BaseException | None = None
            try:
                with _current(span):
                    return await behaviour(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                finish(span, context, error)

        return traced_unary


def _current(span: trace.Span) -> Any:
    """Make `span` current without ending it or judging an exception (AbortError is how a
    handler fails a call on purpose; the final status code decides)."""
    return trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


# --- client side ----------------------------------------------------------------------------


def client_interceptors() -> Sequence[grpc.aio.ClientInterceptor]:
    """For a channel to another service: a CLIENT span per call, its context sent on as
    `traceparent` (OpenTelemetry's grpc.aio client instrumentation)."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())
