"""`ragmesh bench embed --mesh`: what clients get, beside what the model can do, in one run.

1. Embed through Envoy (mutual TLS + API key) from `concurrency` single-text callers, with
   the CPU each side used (the load generator shares the machine's cores);
2. the embeddings cache through Envoy: 32 distinct 1,000-character texts, then the same
   32 again;
3. the bare server (plaintext, no key, no Envoy), same texts and callers;
4. the model in-process, no server: torch at batch 64 and batch 1, and the runtime the
   server chose at batch 64 (all on length-sorted texts).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ragmesh.embeddings.v1 import embeddings_service_pb2 as pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc
from ragmeshd.bench.embed_server import RunResult, bench_texts, drive, embeddings_process
from ragmeshd.bench.loadgen import closed_loop
from ragmeshd.bench.mesh import (
    MeshHandle,
    bench_mesh,
    cpu_seconds,
    process_cpu_seconds,
)
from ragmeshd.bench.report import BenchReport

# Throughput is measured closed-loop: 64 callers keep the queue about one batch long, which
# on a starved machine can pass the load-shedding bound (embeddings.max_queue_wait_ms). The
# servers started here wait instead, so every call counts (`ragmesh bench overload` measures
# shedding).
NO_SHEDDING = {"RAGMESH_EMBEDDINGS__MAX_QUEUE_WAIT_MS": "60000"}
CACHE_TEXTS = 32
CACHE_TEXT_CHARS = 1000
CACHE_ROUNDS = 5


@dataclass
class MeshRun:
    result: RunResult
    runtime: str
    # CPU-seconds spent during the run, by who spent them.
    cpu_s: dict[str, float]
    elapsed_s: float
    texts: int

    @property
    def cores(self) -> dict[str, float]:
        """CPU cores used on average during the run, by who used them."""
        return {name: seconds / self.elapsed_s for name, seconds in self.cpu_s.items()}

    @property
    def cpu_ms_per_text(self) -> dict[str, float]:
        """CPU-milliseconds per text (= CPU-seconds per 1,000 texts), by who spent them."""
        return {name: seconds * 1000 / self.texts for name, seconds in self.cpu_s.items()}

    @property
    def path_cpu_ms_per_text_without_model(self) -> float:
        """What one text costs the full path besides the model's own work: the load
        generator, Envoy and the embeddings server process (not other users' processes)."""
        return sum(ms for name, ms in self.cpu_ms_per_text.items() if name not in (MODEL, OTHERS))


GENERATOR = "load generator (this process)"
MODEL = "embeddings-0 model process"
OTHERS = "anything else (other users too)"


async def drive_mesh(mesh: MeshHandle, texts: list[str], concurrency: int) -> MeshRun:
    """Single-text Embed calls through Envoy, `concurrency` at a time."""
    pids = dict(mesh.state.pids)
    async with mesh.channel() as channel:
        client = pb_grpc.EmbeddingsServiceStub(channel)
        await client.Embed(pb.EmbedRequest(inputs=bench_texts(16, seed=1001)), timeout=60)
        before = await client.Info(pb.InfoRequest())
        cpu_before = _mesh_cpu_s(pids)
        own_before, machine_before = sum(os.times()[:2]), machine_busy_s()
        load = await closed_loop(
            texts,
            lambda text: client.Embed(pb.EmbedRequest(inputs=[text]), timeout=120),
            concurrency,
        )
        own = sum(os.times()[:2]) - own_before
        machine = machine_busy_s() - machine_before
        cpu = {name: seconds - cpu_before[name] for name, seconds in _mesh_cpu_s(pids).items()}
        after = await client.Info(pb.InfoRequest())
    batches = after.batches_run - before.batches_run
    result = RunResult(
        "through Envoy (mTLS + key)",
        load.calls_per_s,
        load.percentile_ms(0.50),
        load.percentile_ms(0.99),
        (after.texts_embedded - before.texts_embedded) / batches if batches else 0.0,
    )
    spent = {GENERATOR: own, **cpu}
    spent[OTHERS] = max(0.0, machine - sum(spent.values()))
    return MeshRun(result, after.runtime, spent, load.elapsed_s, len(texts))


def _mesh_cpu_s(pids: dict[str, int]) -> dict[str, float]:
    """CPU-seconds so far of Envoy, the embeddings server and its model process (a child:
    the model's work and the server's per-call work apart)."""
    spent = {"envoy": cpu_seconds(pids["envoy"])}
    server = pids["embeddings-0"]
    with_children = cpu_seconds(server)
    spent["embeddings-0 server"] = process_cpu_seconds(server)
    spent[MODEL] = with_children - spent["embeddings-0 server"]
    return spent


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # less idle and iowait; guests are in user
    return busy / os.sysconf("SC_CLK_TCK")


def cache_texts(seed: int) -> list[str]:
    """CACHE_TEXTS distinct texts of exactly CACHE_TEXT_CHARS characters."""
    rng = random.Random(seed)
    words = bench_texts(200, seed=seed)
    texts = []
    for index in range(CACHE_TEXTS):
        text = f"{index} " + " ".join(rng.sample(words, 20))
        texts.append(text[:CACHE_TEXT_CHARS].ljust(CACHE_TEXT_CHARS, "."))
    return texts


async def cache_repeat(mesh: MeshHandle) -> tuple[list[float], list[float]]:
    """Per round: ms for Embed of 32 new texts, then ms for the same 32 again."""
    first: list[float] = []
    second: list[float] = []
    async with mesh.channel() as channel:
        client = pb_grpc.EmbeddingsServiceStub(channel)
        await client.Embed(pb.EmbedRequest(inputs=cache_texts(seed=999)), timeout=60)
        for round_ in range(CACHE_ROUNDS):
            texts = cache_texts(seed=round_)
            for times in (first, second):
                started = time.perf_counter()
                await client.Embed(pb.EmbedRequest(inputs=texts), timeout=60)
                times.append((time.perf_counter() - started) * 1000)
    return first, second


def raw(texts: list[str], runtime_setting: str, batch_size: int, models_dir: Path) -> RunResult:
    """The model in this process, no server: length-sorted texts in batches."""
    from sentence_transformers import SentenceTransformer

    from ragmeshd.embeddings.runtime_choice import choose_runtime
    from ragmeshd.embeddings.runtimes import model_identity
    from ragmeshd.models import packaged_model_path

    path = packaged_model_path()
    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    identity = f"all-MiniLM-L6-v2-{model_identity(path)}"
    runtime, _ = choose_runtime(runtime_setting, model, identity, "cpu", models_dir)
    ordered = sorted(texts, key=len)
    runtime.embed(ordered[:batch_size])
    started, cpu_before = time.perf_counter(), sum(os.times()[:2])
    for start in range(0, len(ordered), batch_size):
        runtime.embed(ordered[start : start + batch_size])
    elapsed = time.perf_counter() - started
    cpu_ms_per_text = (sum(os.times()[:2]) - cpu_before) * 1000 / len(texts)
    label = f"raw {runtime.name} (bs={batch_size})"
    return RunResult(label, len(texts) / elapsed, 0, 0, batch_size, cpu_ms_per_text)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def run_mesh_bench(
    *,
    concurrency: int,
    requests: int,
    mesh_state_dir: Path | None,
    port: int,
    models_dir: Path,
    raw_batch1_texts: int = 100,
) -> BenchReport:
    """Runs every phase, printing each line as it is measured (a slow shared machine may
    take a while); returns the summary with the ratios."""
    texts = bench_texts(requests)
    load_before = uptime()
    _emit(f"ragmesh bench embed --mesh: {requests} single-text Embed calls, {concurrency} callers")
    _emit(f"load before: {load_before}")
    with bench_mesh(mesh_state_dir, models_dir, NO_SHEDDING) as mesh:
        mesh_run = asyncio.run(drive_mesh(mesh, texts, concurrency))
        _emit(f"{mesh_run.result.line()}   runtime {mesh_run.runtime}")
        first_ms, second_ms = asyncio.run(cache_repeat(mesh))
        rounds = [", ".join(f"{ms:.1f}" for ms in run) for run in (first_ms, second_ms)]
        _emit(f"cache rounds (ms): first [{rounds[0]}], repeated [{rounds[1]}]")
    with tempfile.TemporaryDirectory(prefix="ragmesh-bench-") as log_dir:
        env = {"RAGMESH_EMBEDDINGS__RUNTIME_CACHE_DIR": str(models_dir), **NO_SHEDDING}
        with embeddings_process(port, Path(log_dir), env=env) as bare_target:
            bare = asyncio.run(drive(bare_target, texts, concurrency, "bare server (no Envoy)"))
    _emit(bare.line())
    torch64 = raw(texts, "torch", 64, models_dir)
    _emit(torch64.line())
    torch1 = raw(texts[:raw_batch1_texts], "torch", 1, models_dir)
    _emit(torch1.line())
    chosen64 = raw(texts, "auto", 64, models_dir)
    _emit(chosen64.line())
    return report(
        mesh_run, bare, torch64, torch1, chosen64, first_ms, second_ms,
        concurrency=concurrency, requests=requests, load=(load_before, uptime()),
    )  # fmt: skip


def _emit(line: str) -> None:
    print(line, flush=True)


def report(
    mesh: MeshRun,
    bare: RunResult,
    torch64: RunResult,
    torch1: RunResult,
    chosen64: RunResult,
    first_ms: list[float],
    second_ms: list[float],
    *,
    concurrency: int,
    requests: int,
    load: tuple[str, str],
) -> BenchReport:
    envoy = mesh.result
    first, second = statistics.median(first_ms), statistics.median(second_ms)
    lines = [
        f"ragmesh bench embed --mesh: {requests} single-text Embed calls, {concurrency} callers;"
        f" server runtime {mesh.runtime}; {os.cpu_count()} CPUs",
        f"load before: {load[0]}",
        envoy.line(),
        bare.line(),
        torch64.line(),
        torch1.line(),
        chosen64.line(),
        f"envoy / raw torch bs=64          = {envoy.texts_per_s / torch64.texts_per_s:.2f}x"
        "   (target >= 1.4x)",
        f"envoy / raw {chosen64.label[4:]:<20} = {envoy.texts_per_s / chosen64.texts_per_s:.2f}x"
        "   (target >= 0.8x)",
        f"envoy / bare server              = {envoy.texts_per_s / bare.texts_per_s:.2f}x",
        f"raw chosen / raw torch (bs=64)   = {chosen64.texts_per_s / torch64.texts_per_s:.2f}x",
        f"raw torch bs=64 / bs=1           = {torch64.texts_per_s / torch1.texts_per_s:.2f}x",
        f"envoy p99                        = {envoy.p99_ms:.1f} ms   (target < 500 ms)",
        "CPU cores used during the Envoy run (of "
        f"{os.cpu_count()}): "
        + ", ".join(f"{name} {cores:.2f}" for name, cores in mesh.cores.items()),
        "CPU-seconds per 1,000 texts during the Envoy run: "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in mesh.cpu_ms_per_text.items()),
        *_bound(mesh, chosen64),
        f"cache: Embed of {CACHE_TEXTS} distinct {CACHE_TEXT_CHARS}-char texts through Envoy,"
        f" median of {CACHE_ROUNDS} rounds: first {first:.1f} ms, repeated {second:.1f} ms"
        f" = {first / second:.1f}x faster   (target >= 10x)",
        f"load after: {load[1]}",
    ]
    numbers = {
        "requests": requests,
        "concurrency": concurrency,
        "runtime": mesh.runtime,
        "runs": [envoy, bare, torch64, torch1, chosen64],
        "envoy_over_raw_torch_bs64": envoy.texts_per_s / torch64.texts_per_s,
        "envoy_over_raw_chosen_bs64": envoy.texts_per_s / chosen64.texts_per_s,
        "envoy_over_bare_server": envoy.texts_per_s / bare.texts_per_s,
        "cpu_cores_during_envoy_run": mesh.cores,
        "cpu_ms_per_text_during_envoy_run": mesh.cpu_ms_per_text,
        "cache_first_ms": first,
        "cache_repeated_ms": second,
    }
    return BenchReport("\n".join(lines), numbers)


def _bound(mesh: MeshRun, chosen64: RunResult) -> list[str]:
    """The most the full path could serve on this machine's cores, if the model in the server
    cost no more than in the raw run: every text still costs the generator, Envoy and the
    server what they spent per text here, which the raw run never pays."""
    if not chosen64.cpu_ms_per_text:
        return []
    cores = os.cpu_count() or 1
    besides_model = mesh.path_cpu_ms_per_text_without_model
    per_text = besides_model + chosen64.cpu_ms_per_text
    bound = cores * 1000 / per_text
    return [
        f"{chosen64.label} spent {chosen64.cpu_ms_per_text:.2f} CPU-seconds per 1,000 texts;"
        f" the path besides the model {besides_model:.2f} (generator + Envoy + server)",
        f"bound: {cores} cores / {per_text:.2f} CPU-s per 1,000 texts = {bound:.0f} texts/s"
        f" = {bound / chosen64.texts_per_s:.2f}x raw {chosen64.label[4:]}"
        " (the full path at the raw run's model cost, no other users)",
    ]
