"""`ragmesh bench ingest`: documents through UpsertDocuments beside the raw model, one run.

1. A mesh (`ragmesh up`, one replica each) on free ports; documents of text only go through
   Envoy (mutual TLS + API key) in UpsertDocuments calls of `batch` documents, `concurrency`
   calls at a time; the search server splits them into passages, has them embedded through
   Envoy by the embeddings service and stores them. Reported: passages/s end to end and the
   CPU each process used (the load generator shares the machine's cores).
2. After the mesh stops, the same passages through the model in this process, with the
   runtime the embeddings server chose, in batches of 64: the raw encode speed.

The ratio of the two is what the ingestion path costs on top of the model. The raw side
encodes exactly the passages the search server's splitter makes of the documents.

The mesh runs with default settings: writes are embedded in the embeddings server's bulk lane,
which waits instead of shedding (issue 21). The documents go in two halves. The first half
alone measures throughput (the ratio above). During the second half a probe sends one
single-text Embed (a unique text: the cache never answers it) every 50 ms, as it did with the
mesh idle before: interactive calls must stay fast while a bulk write runs (target: p99
during the ingest <= 2x the idle p99 + 50 ms). The probe's ~20 calls/s take their share of the
model, which is why they stay out of the throughput half. A probe refused or failed is counted,
never retried.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from ragmesh.search.v1 import search_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
from ragmeshd.bench.embed_mesh import raw, uptime
from ragmeshd.bench.embed_server import RunResult
from ragmeshd.bench.loadgen import closed_loop
from ragmeshd.bench.mesh import bench_mesh
from ragmeshd.bench.report import BenchReport
from ragmeshd.bench.search_mesh import ProcessCpu
from ragmeshd.bench.text import TextSource

COLLECTION = "bench-ingest"
DIMENSIONS = 384
# Words per document (made-up Zipf words are several word pieces each: one or two passages).
DOCUMENT_WORDS = (40, 90)


# The interactive probe: one single-text Embed this often, idle for PROBE_IDLE_S first.
PROBE_INTERVAL_S = 0.05
PROBE_IDLE_S = 5.0


@dataclass
class Probe:
    """Latencies (ms) of single-text Embed calls, and how many failed (refusals included)."""

    latencies_ms: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    def p(self, quantile: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]

    def line(self, label: str) -> str:
        failed = ", ".join(f"{code} {n}" for code, n in self.failures.items()) or "none"
        return (
            f"  Embed of one text {label}: p50 {self.p(0.5):6.1f} ms  p99 {self.p(0.99):6.1f} ms"
            f"  ({len(self.latencies_ms)} calls, failed: {failed})"
        )


async def probe(
    stub: embeddings_grpc.EmbeddingsServiceStub, stop: asyncio.Event, tag: str
) -> Probe:
    found = Probe()
    number = 0
    while not stop.is_set():
        number += 1
        request = embeddings_pb.EmbedRequest(inputs=[f"probe {tag} {number} {time.time_ns()}"])
        started = time.perf_counter()
        try:
            await stub.Embed(request, timeout=30)
            found.latencies_ms.append((time.perf_counter() - started) * 1000)
        except grpc.aio.AioRpcError as error:
            code = error.code().name
            found.failures[code] = found.failures.get(code, 0) + 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=PROBE_INTERVAL_S)
    return found


def documents(count: int, seed: int) -> list[str]:
    import numpy as np

    source = TextSource("zipf", np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    return [source.sentence(int(n)) for n in rng.integers(*DOCUMENT_WORDS, size=count)]


def _calls(texts: list[str], start: int, end: int, batch: int) -> list[pb.UpsertDocumentsRequest]:
    """UpsertDocuments requests of `batch` documents each for texts[start:end]."""
    return [
        pb.UpsertDocumentsRequest(
            collection=COLLECTION,
            documents=[
                pb.Document(id=str(i), text=texts[i]) for i in range(first, min(first + batch, end))
            ],
        )
        for first in range(start, end, batch)
    ]


async def drive(
    handle_channel: object, texts: list[str], batch: int, concurrency: int, cpu: ProcessCpu
) -> tuple[float, float, float, dict[str, float], int, Probe, Probe]:
    """UpsertDocuments of `batch` documents, `concurrency` at a time. The first half of the
    texts: passages/s, p50 and p99 call latency (ms), CPU cores by process, passages stored;
    then the interactive probe idle and during the second half."""
    async with handle_channel() as channel:  # type: ignore[operator]
        stub = pb_grpc.SearchServiceStub(channel)
        embed = embeddings_grpc.EmbeddingsServiceStub(channel)
        await stub.CreateCollection(
            pb.CreateCollectionRequest(name=COLLECTION, dimensions=DIMENSIONS)
        )
        half = len(texts) // 2
        measured, probed = _calls(texts, 0, half, batch), _calls(texts, half, len(texts), batch)
        # Warm-up: one call (first model use, first database writes), not measured.
        warm = pb.UpsertDocumentsRequest(
            collection=COLLECTION, documents=[pb.Document(id="warm", text=texts[0])]
        )
        await stub.UpsertDocuments(warm, timeout=120)
        stored: list[int] = []

        async def upsert(request: pb.UpsertDocumentsRequest) -> None:
            response = await stub.UpsertDocuments(request, timeout=300)
            stored.append(response.passage_count)

        idle_stop = asyncio.Event()
        idle_task = asyncio.create_task(probe(embed, idle_stop, "idle"))
        await asyncio.sleep(PROBE_IDLE_S)
        idle_stop.set()
        idle = await idle_task
        cpu.start()
        load = await closed_loop(measured, upsert, concurrency)
        cores = cpu.cores(load.elapsed_s)
        passages = sum(stored)
        busy_stop = asyncio.Event()
        busy_task = asyncio.create_task(probe(embed, busy_stop, "busy"))
        await closed_loop(probed, upsert, concurrency)
        busy_stop.set()
        busy = await busy_task
    return (
        passages / load.elapsed_s,
        load.percentile_ms(0.5),
        load.percentile_ms(0.99),
        cores,
        passages,
        idle,
        busy,
    )


def _raw_model(texts: list[str], models_dir: Path) -> tuple[list[str], RunResult]:
    """The raw model on exactly the passages the search server made of `texts`."""
    from ragmeshd.search.chunking import make_splitter
    from ragmeshd.settings import load_settings

    splitter = make_splitter(load_settings())
    pieces = [piece for text in texts for piece in splitter.split(text)]
    return pieces, raw(pieces, "auto", 64, models_dir)


def run_ingest_bench(
    *, count: int, batch: int, concurrency: int, seed: int, models_dir: Path
) -> BenchReport:
    texts = documents(count, seed)
    load_before = uptime()
    print(f"load before: {load_before}", flush=True)
    # Default settings: no shedding turned off (the bulk lane makes writes wait instead).
    with bench_mesh(None, models_dir) as handle:
        cpu = ProcessCpu(dict(handle.state.pids))
        rate, p50, p99, cores, passages, idle, busy = asyncio.run(
            drive(handle.channel, texts, batch, concurrency, cpu)
        )
    print(f"through Envoy: {rate:.1f} passages/s", flush=True)
    # The throughput half: the first half of the documents (drive's `measured`).
    pieces, model = _raw_model(texts[: len(texts) // 2], models_dir)
    load_after = uptime()
    # What the replica (server and model process) did with the CPU it got, beside the raw
    # model's passages per CPU-second: on a shared machine the end-to-end ratio also measures
    # how much CPU the replica was given.
    per_cpu_s = rate / cores["embeddings-0"]
    raw_per_cpu_s = 1000 / model.cpu_ms_per_text
    lines = [
        f"ragmesh bench ingest: {count} documents of {DOCUMENT_WORDS[0]}-{DOCUMENT_WORDS[1]}"
        f" Zipf words, {os.cpu_count()} CPUs",
        f"load before: {load_before}",
        f"UpsertDocuments through Envoy (mTLS + key), {batch} documents a call,"
        f" {concurrency} calls at a time, first half: {rate:8.1f} passages/s   p50 {p50:7.0f} ms"
        f"   p99 {p99:7.0f} ms   ({passages} passages stored)",
        "  CPU cores: " + ", ".join(f"{name} {value:.2f}" for name, value in cores.items()),
        idle.line("idle                       "),
        busy.line("during ingest (second half)"),
        f"  p99 during ingest / (2 x idle p99 + 50 ms) = "
        f"{busy.p(0.99) / (2 * idle.p(0.99) + 50):.2f}   (target <= 1)",
        f"{model.label} in this process, the same {len(pieces)} passages:"
        f" {model.texts_per_s:8.1f} passages/s",
        f"ingest / raw model = {rate / model.texts_per_s:.2f}x   (target >= 0.8x)",
        f"per CPU-second: embeddings replica {per_cpu_s:.1f} passages, raw model"
        f" {raw_per_cpu_s:.1f}: {per_cpu_s / raw_per_cpu_s:.2f}x   (target >= 0.9x)",
        f"load after: {load_after}",
    ]
    numbers = {
        "documents": count,
        "batch": batch,
        "concurrency": concurrency,
        "passages": passages,
        "passages_per_s": rate,
        "p50_ms": p50,
        "p99_ms": p99,
        "cpu_cores": cores,
        "embed_idle_p99_ms": idle.p(0.99),
        "embed_during_ingest_p99_ms": busy.p(0.99),
        "raw_model_passages_per_s": model.texts_per_s,
        "ingest_over_raw_model": rate / model.texts_per_s,
        "replica_passages_per_cpu_s": per_cpu_s,
        "raw_model_passages_per_cpu_s": raw_per_cpu_s,
    }
    return BenchReport("\n".join(lines), numbers)


def register_ingest_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Adds `ragmesh bench ingest` to the `bench` command's subcommands."""
    ingest = bench_subparsers.add_parser(
        "ingest",
        help="UpsertDocuments through Envoy beside the raw model's encode speed",
        description="Start a mesh, send text-only documents through UpsertDocuments (Envoy,"
        " mTLS + API key), then encode the same passages with the model in-process; print"
        " both rates and their ratio.",
    )
    ingest.add_argument("--documents", type=int, default=2000, help="documents sent (default 2000)")
    ingest.add_argument("--batch", type=int, default=32, help="documents per call (default 32)")
    ingest.add_argument(
        "--concurrency", type=int, default=4, help="calls in flight at once (default 4)"
    )
    ingest.add_argument(
        "--seed", type=int, default=42, help="seed of the generated documents (default 42)"
    )
    ingest.set_defaults(handler=_bench_ingest)


def _bench_ingest(args: argparse.Namespace) -> int:
    from ragmeshd.settings import load_settings

    return args.emit_report(
        args,
        "ingest",
        lambda: run_ingest_bench(
            count=args.documents,
            batch=args.batch,
            concurrency=args.concurrency,
            seed=args.seed,
            models_dir=load_settings().models_dir,
        ),
    )
