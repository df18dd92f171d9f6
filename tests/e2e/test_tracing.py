"""One Ask through the whole mesh yields one trace: Envoy, coordinator, search and embeddings
spans, linked parent to child, collected by an OTLP/gRPC receiver that the test runs.

The mesh is its own (`ragmesh up` with RAGMESH_TELEMETRY__OTLP_ENDPOINT pointing at the
receiver), and the coordinator's local language model is the chat-completions test double.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from ragmesh.coordinator.v1 import coordinator_service_pb2 as coordinator_pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as coordinator_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from tests.integration.coordinator.fake_llm import FakeLLM
from tests.mesh import Mesh, running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.long]

SERVICES = ("ragmesh-envoy", "ragmesh-coordinator", "ragmesh-search", "ragmesh-embeddings")
SPANS_TIMEOUT_S = 30.0
SERVER = trace_pb2.Span.SPAN_KIND_SERVER


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    span: trace_pb2.Span

    @property
    def span_id(self) -> bytes:
        return self.span.span_id

    @property
    def parent_id(self) -> bytes:
        return self.span.parent_span_id


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps every span it is sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            service = attributes.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                received += [ReceivedSpan(service, span) for span in scope_spans.spans]
        with self._lock:
            self._spans += received
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: bytes) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if s.span.trace_id == trace_id]

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, int]]:
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, port
    finally:
        server.stop(None)


@pytest.fixture(scope="module")
def traced_mesh(
    receiver: tuple[Receiver, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    _, port = receiver
    llm = FakeLLM("local-model")
    env = {
        "RAGMESH_TELEMETRY__OTLP_ENDPOINT": f"127.0.0.1:{port}",
        "RAGMESH_TELEMETRY__EXPORT_DELAY_MS": "200",
        "RAGMESH_COORDINATOR__LOCAL_URL": llm.url,
        "RAGMESH_COORDINATOR__LOCAL_MODEL": "local-model",
    }
    try:
        # The fake model is the LOCAL route: no llm service of the mesh's own (--llm none).
        with running_mesh(tmp_path_factory.mktemp("traced-mesh"), env, "--llm", "none") as mesh:
            yield mesh
    finally:
        llm.close()


def ancestors(span: ReceivedSpan, by_id: dict[bytes, ReceivedSpan]) -> list[ReceivedSpan]:
    chain = []
    while span.parent_id:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


def test_one_ask_is_one_trace_across_envoy_and_every_service(
    receiver: tuple[Receiver, int], traced_mesh: Mesh
) -> None:
    spans, _ = receiver
    metadata = [("authorization", f"Bearer {traced_mesh.api_key}")]
    with grpc.secure_channel(traced_mesh.endpoint, traced_mesh.client_credentials()) as channel:
        search = search_grpc.SearchServiceStub(channel)
        search.CreateCollection(
            search_pb.CreateCollectionRequest(name="traced"), metadata=metadata, timeout=60
        )
        search.UpsertDocuments(
            search_pb.UpsertDocumentsRequest(
                collection="traced",
                documents=[
                    search_pb.Document(id="envoy", text="Envoy adds a span to every call."),
                    search_pb.Document(id="otlp", text="Spans are exported over OTLP and gRPC."),
                ],
            ),
            metadata=metadata,
            timeout=60,
        )
        responses = list(
            coordinator_grpc.CoordinatorServiceStub(channel).Ask(
                coordinator_pb.AskRequest(query="how are spans exported?", collections=["traced"]),
                metadata=metadata,
                timeout=60,
            )
        )
    assert responses[-1].HasField("summary")
    assert "local-model answer" in "".join(r.chunk.text for r in responses if r.HasField("chunk"))

    # The Ask's coordinator SERVER span names the trace; wait until every part of it arrived.
    deadline = time.monotonic() + SPANS_TIMEOUT_S
    trace: list[ReceivedSpan] = []
    while time.monotonic() < deadline:
        asks = [
            s
            for s in spans.spans()
            if s.service == "ragmesh-coordinator"
            and s.span.name == "ragmesh.coordinator.v1.CoordinatorService/Ask"
        ]
        if asks:
            trace = spans.trace(asks[0].span.trace_id)
            names = {(s.service, s.span.name) for s in trace}
            if (
                {s.service for s in trace} >= set(SERVICES)
                and {
                    ("ragmesh-embeddings", "batch encode"),
                    ("ragmesh-search", "backend query"),
                    ("ragmesh-coordinator", "llm call"),
                }
                <= names
                and _links_complete(trace)
            ):
                break
        time.sleep(0.5)
    summary = sorted((s.service, s.span.name) for s in trace)
    assert {s.service for s in trace} >= set(SERVICES), summary
    assert len(asks) == 1, "one Ask, one coordinator Ask span"

    # One tree: every span's parent is in the trace, except the root's (Envoy's, since the
    # client sent no trace context).
    by_id = {s.span_id: s for s in trace}
    roots = [s for s in trace if not s.parent_id]
    assert [r.service for r in roots] == ["ragmesh-envoy"], summary
    assert all(not s.parent_id or s.parent_id in by_id for s in trace), summary

    # The embeddings SERVER span descends from search's, which descends from the
    # coordinator's, each reached through an Envoy span (W3C context passes through Envoy).
    embed_servers = [
        s for s in trace if s.service == "ragmesh-embeddings" and s.span.kind == SERVER
    ]
    assert embed_servers, summary
    for embed in embed_servers:
        chain = ancestors(embed, by_id)
        services = [s.service for s in chain]
        assert chain[0].service == "ragmesh-envoy", services
        search_server = next(
            s for s in chain if s.service == "ragmesh-search" and s.span.kind == SERVER
        )
        assert search_server.span.name == "ragmesh.search.v1.SearchService/Search"
        assert ancestors(search_server, by_id)[0].service == "ragmesh-envoy"
        assert any(s.service == "ragmesh-coordinator" and s.span.kind == SERVER for s in chain), (
            services
        )
        assert chain[-1].service == "ragmesh-envoy"

    # The access log line of each traced call carries its SERVER span's trace and span ids.
    search_servers = [s for s in trace if s.service == "ragmesh-search" and s.span.kind == SERVER]
    logged = [
        line
        for line in log_lines(traced_mesh.state_dir / "logs" / "search-0.log")
        if line.get("event") == "rpc finished"
        and line.get("grpc_method") == "/ragmesh.search.v1.SearchService/Search"
    ]
    assert {(line["trace_id"], line["span_id"]) for line in logged} >= {
        (s.span.trace_id.hex(), s.span_id.hex()) for s in search_servers
    }, logged

    # Spans inside the work sit under their service's SERVER span.
    for service, name in (
        ("ragmesh-embeddings", "batch encode"),
        ("ragmesh-search", "backend query"),
        ("ragmesh-coordinator", "llm call"),
    ):
        inner = [s for s in trace if s.service == service and s.span.name == name]
        assert inner, (service, name, summary)
        for span in inner:
            parent = by_id[span.parent_id]
            assert parent.service == service and parent.span.kind == SERVER, (name, summary)


def log_lines(path: Path) -> list[dict[str, object]]:
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            continue
    return lines


def _links_complete(trace: list[ReceivedSpan]) -> bool:
    ids = {s.span_id for s in trace}
    return all(not s.parent_id or s.parent_id in ids for s in trace)
