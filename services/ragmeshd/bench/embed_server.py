"""`ragmesh bench embed`: throughput and latency of the embeddings server.

One run measures, on the same texts and the same machine:
  1. the server with dynamic batching (the default settings),
  2. the same server with batching off (max_batch_texts=1),
  3. the model in-process, SentenceTransformer.encode(batch_size=64),
and prints the ratios, so noisy shared machines still give comparable numbers.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from ragmesh.embeddings.v1 import embeddings_service_pb2 as pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc
from ragmeshd.bench.loadgen import closed_loop
from ragmeshd.bench.report import BenchReport
from ragmeshd.embeddings.server import SERVICE_NAME
from ragmeshd.executables import ragmesh_argv
from ragmeshd.runtime.health_client import SERVING, check_health
from ragmeshd.supervisor.processes import ProcessSpec, Supervisor

_WORDS = (
    "retrieval mesh vector index query passage document embedding model batch latency"
    " server client envoy cluster health replica postgres keyword hybrid fusion rank score"
    " protein cell gene study patients treatment results effect analysis significant"
).split()


def bench_texts(count: int, seed: int = 7) -> list[str]:
    """Deterministic sentences of 8 to 40 words."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 40))).capitalize() + "."
        for _ in range(count)
    ]


@dataclass
class RunResult:
    label: str
    texts_per_s: float
    p50_ms: float
    p99_ms: float
    mean_batch: float
    # CPU-milliseconds this process spent per text (in-process runs; 0: not measured).
    cpu_ms_per_text: float = 0.0

    def line(self) -> str:
        batch = f"{self.mean_batch:6.1f}" if self.mean_batch else "     -"
        line = (
            f"{self.label:<28} {self.texts_per_s:9.1f} texts/s   p50 {self.p50_ms:8.1f} ms"
            f"   p99 {self.p99_ms:8.1f} ms   mean batch {batch}"
        )
        if self.cpu_ms_per_text:
            line += f"   {self.cpu_ms_per_text:.2f} CPU-s per 1,000 texts"
        return line


ChannelFactory = Callable[[], grpc.aio.Channel]


def plaintext(target: str) -> ChannelFactory:
    """Channels to a server started here (loopback, no TLS, no key)."""
    return lambda: grpc.aio.insecure_channel(target)


async def drive(
    target: str | ChannelFactory, texts: list[str], concurrency: int, label: str
) -> RunResult:
    """Send each text as its own Embed call, `concurrency` calls at a time, to a server
    started here (its address) or through a channel the caller makes (a mesh: mTLS + key)."""
    factory = plaintext(target) if isinstance(target, str) else target
    async with factory() as channel:
        client = pb_grpc.EmbeddingsServiceStub(channel)
        # Warm up: the first calls pay for lazy initialisation. Other texts than the measured
        # ones, which must not be in the server's embeddings cache.
        await client.Embed(pb.EmbedRequest(inputs=bench_texts(8, seed=1000)), timeout=60)
        before = await client.Info(pb.InfoRequest())
        load = await closed_loop(
            texts,
            lambda text: client.Embed(pb.EmbedRequest(inputs=[text]), timeout=120),
            concurrency,
        )
        after = await client.Info(pb.InfoRequest())
    batches = after.batches_run - before.batches_run
    return RunResult(
        label,
        load.calls_per_s,
        load.percentile_ms(0.50),
        load.percentile_ms(0.99),
        (after.texts_embedded - before.texts_embedded) / batches if batches else 0.0,
    )


def in_process(texts: list[str], batch_size: int) -> RunResult:
    from sentence_transformers import SentenceTransformer

    from ragmeshd.models import packaged_model_path, resolve_device

    model = SentenceTransformer(str(packaged_model_path()), device=resolve_device("auto"))
    model.encode(texts[:64], batch_size=batch_size)
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size, show_progress_bar=False)
    elapsed = time.perf_counter() - started
    del model
    return RunResult(
        f"in-process encode(bs={batch_size})", len(texts) / elapsed, 0.0, 0.0, batch_size
    )


@contextmanager
def embeddings_process(
    port: int, log_dir: Path, *flags: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """A fresh server on `port`, stopped when the block ends."""
    target = f"127.0.0.1:{port}"

    async def ready() -> bool:
        return await check_health(target, SERVICE_NAME) == SERVING

    supervisor = Supervisor()
    spec = ProcessSpec(
        name=f"bench-embeddings-{port}",
        argv=ragmesh_argv("serve", "embeddings", "--listen", target, *flags),
        log_path=log_dir / f"embeddings-{port}.log",
        is_ready=ready,
        # A private loopback server for this run: no keys, no metrics port to collide with.
        env={
            "RAGMESH_SERVER__REQUIRE_API_KEY": "false",
            "RAGMESH_EMBEDDINGS__METRICS_LISTEN": "",
            **(env or {}),
        },
    )
    try:
        asyncio.run(supervisor.start_in_order([spec], timeout_s=180))
        yield target
    finally:
        asyncio.run(supervisor.stop_all())


def run_bench(
    *,
    concurrency: int,
    requests: int,
    target: ChannelFactory | None,
    port: int,
    raw_batch_size: int,
) -> list[RunResult]:
    texts = bench_texts(requests)
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-") as log_dir:
        if target:
            results.append(
                asyncio.run(drive(target, texts, concurrency, "the mesh at --target (Envoy)"))
            )
        else:
            with embeddings_process(port, Path(log_dir)) as batched:
                results.append(
                    asyncio.run(drive(batched, texts, concurrency, "server, batching on"))
                )
        with embeddings_process(port + 1, Path(log_dir), "--max-batch-texts", "1") as unbatched:
            results.append(
                asyncio.run(drive(unbatched, texts, concurrency, "server, batching off"))
            )
    results.append(in_process(texts, raw_batch_size))
    return results


def report(results: list[RunResult], concurrency: int, requests: int) -> BenchReport:
    batched, unbatched, raw = results
    lines = [
        f"ragmesh bench embed: {requests} single-text Embed calls, concurrency {concurrency}",
        *(result.line() for result in results),
        f"batched / unbatched       = {batched.texts_per_s / unbatched.texts_per_s:.2f}x"
        "   (target >= 3x)",
        f"batched / in-process      = {batched.texts_per_s / raw.texts_per_s:.2%}"
        "   (target >= 80%)",
        f"batched p99               = {batched.p99_ms:.1f} ms   (target < 500 ms)",
    ]
    return BenchReport(
        "\n".join(lines),
        {
            "requests": requests,
            "concurrency": concurrency,
            "runs": results,
            "batched_over_unbatched": batched.texts_per_s / unbatched.texts_per_s,
            "batched_over_in_process": batched.texts_per_s / raw.texts_per_s,
        },
    )
