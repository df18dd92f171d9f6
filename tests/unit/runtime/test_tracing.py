"""Tracing interceptors on a real grpc.aio server and channel in this process: SERVER spans
named after the method with the final status code, CLIENT spans whose context reaches the
next server as `traceparent`, and log lines that carry the current trace and span ids."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ragmeshd.runtime.error_interceptor import ErrorInterceptor
from ragmeshd.runtime.errors import RpcFailure
from ragmeshd.runtime.logs import JsonFormatter
from ragmeshd.runtime.tracing import TracingServerInterceptor, client_interceptors, tracer
from ragmeshd.settings import load_settings, parse_otlp_endpoint
from tests.helpers import expect_error

SERVICE = "ragmesh.test.v1.TestService"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def log_lines() -> Iterator[Recorder]:
    recorder = Recorder()
    logger = logging.getLogger("ragmesh.test")
    logger.addHandler(recorder)
    logger.setLevel(logging.INFO)
    yield recorder
    logger.removeHandler(recorder)


class Server:
    def __init__(self) -> None:
        self.server = grpc.aio.server(interceptors=[TracingServerInterceptor(), ErrorInterceptor()])
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, self._handlers())]
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.channel: grpc.aio.Channel | None = None

    def _handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            logging.getLogger("ragmesh.test").info("echo")
            return request

        async def relay(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            assert self.channel is not None
            with tracer.start_as_current_span("inner work"):
                return await self.channel.unary_unary(f"/{SERVICE}/Echo")(request, timeout=5)

        async def missing(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            raise RpcFailure(grpc.StatusCode.NOT_FOUND, "no such thing")

        async def broken(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            raise RuntimeError("boom")

        async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            for part in (b"a", b"b", b"c"):
                yield part

        async def written(request: bytes, context: grpc.aio.ServicerContext) -> None:
            # A streaming handler that writes instead of yielding, as the health Watch does.
            await context.write(b"w")

        return {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Relay": grpc.unary_unary_rpc_method_handler(relay),
            "Missing": grpc.unary_unary_rpc_method_handler(missing),
            "Broken": grpc.unary_unary_rpc_method_handler(broken),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Written": grpc.unary_stream_rpc_method_handler(written),
        }

    async def __aenter__(self) -> grpc.aio.Channel:
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{self.port}", interceptors=client_interceptors()
        )
        return self.channel

    async def __aexit__(self, *exc: object) -> None:
        assert self.channel is not None
        await self.channel.close()
        await self.server.stop(None)


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    matches = [span for span in spans if span.name == name]
    assert len(matches) == 1, [span.name for span in spans]
    return matches[0]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_client_and_server_spans_share_one_trace_with_parent_links(
    exporter: InMemorySpanExporter, log_lines: Recorder
) -> None:
    exporter.clear()
    async with Server() as channel:
        assert await channel.unary_unary(f"/{SERVICE}/Relay")(b"hi", timeout=5) == b"hi"
    spans = exporter.get_finished_spans()
    relay_server = by_name(spans, f"{SERVICE}/Relay")
    inner = by_name(spans, "inner work")
    echo_server = by_name(spans, f"{SERVICE}/Echo")
    clients = [span for span in spans if span.kind is SpanKind.CLIENT]
    relay_client = next(span for span in clients if span.name.endswith("/Relay"))
    echo_client = next(span for span in clients if span.name.endswith("/Echo"))

    assert {span.context.trace_id for span in spans} == {relay_client.context.trace_id}
    assert relay_client.parent is None
    assert parent_id(relay_server) == relay_client.context.span_id
    assert parent_id(inner) == relay_server.context.span_id
    assert parent_id(echo_client) == inner.context.span_id
    assert parent_id(echo_server) == echo_client.context.span_id
    assert relay_server.kind is SpanKind.SERVER
    assert relay_server.attributes is not None
    assert relay_server.attributes["rpc.system"] == "grpc"
    assert relay_server.attributes["rpc.service"] == SERVICE
    assert relay_server.attributes["rpc.method"] == "Relay"
    assert relay_server.attributes["rpc.grpc.status_code"] == 0

    (line,) = [line for line in log_lines.lines if line["event"] == "echo"]
    assert line["trace_id"] == f"{echo_server.context.trace_id:032x}"
    assert line["span_id"] == f"{echo_server.context.span_id:016x}"


async def test_status_codes_on_server_spans(exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    async with Server() as channel:
        for method, code in (
            ("Missing", grpc.StatusCode.NOT_FOUND),
            ("Broken", grpc.StatusCode.INTERNAL),
        ):
            await expect_error(channel.unary_unary(f"/{SERVICE}/{method}")(b"", timeout=5), code)
    spans = exporter.get_finished_spans()
    missing = by_name(spans, f"{SERVICE}/Missing")
    broken = by_name(spans, f"{SERVICE}/Broken")
    assert missing.attributes is not None and broken.attributes is not None
    assert missing.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    # A caller's mistake leaves the span's status unset; a server failure marks it an error.
    assert missing.status.status_code is StatusCode.UNSET
    assert broken.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert broken.status.status_code is StatusCode.ERROR


async def test_streaming_handlers_of_both_kinds_are_traced(exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    async with Server() as channel:
        parts = [part async for part in channel.unary_stream(f"/{SERVICE}/Stream")(b"", timeout=5)]
        written = [
            part async for part in channel.unary_stream(f"/{SERVICE}/Written")(b"", timeout=5)
        ]
    assert parts == [b"a", b"b", b"c"]
    assert written == [b"w"]
    spans = exporter.get_finished_spans()
    for method in ("Stream", "Written"):
        server = by_name(spans, f"{SERVICE}/{method}")
        assert server.attributes is not None
        assert server.attributes["rpc.grpc.status_code"] == 0


def test_log_lines_outside_a_span_carry_null_ids() -> None:
    record = logging.LogRecord("ragmesh.test", logging.INFO, __file__, 1, "quiet", None, None)
    line = json.loads(JsonFormatter("test").format(record))
    assert line["trace_id"] is None and line["span_id"] is None


def test_otlp_endpoint_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_otlp_endpoint("127.0.0.1:4317") == ("127.0.0.1", 4317)
    assert parse_otlp_endpoint("http://localhost:4317/") == ("localhost", 4317)
    assert parse_otlp_endpoint("[::1]:4317") == ("::1", 4317)
    for bad in ("https://collector:4317", "localhost", "http://host:4317/v1/traces", "host:0"):
        with pytest.raises(ValueError):
            parse_otlp_endpoint(bad)

    monkeypatch.delenv("RAGMESH_TELEMETRY__OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert load_settings().telemetry.otlp_address is None
    # The standard variable is read by the settings object...
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    assert load_settings().telemetry.otlp_address == ("127.0.0.1", 4317)
    # ...and ragmesh's own setting wins over it.
    monkeypatch.setenv("RAGMESH_TELEMETRY__OTLP_ENDPOINT", "127.0.0.1:14317")
    assert load_settings().telemetry.otlp_address == ("127.0.0.1", 14317)
