"""`ragmesh profile`: each service's memory and CPU, idle and under load, for sizing pods.

Measures a mesh that `ragmesh up` runs (its mesh.json names the processes): first idle, then
while calls go through Envoy with mTLS and the admin key (Embed, Search, AugmentQuery at a
fixed concurrency each, all at once). A process's figures include its children (the
embeddings model runs in one). The Kubernetes requests and limits in deploy/kubernetes/ come
from these numbers (docs/operations.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from ragmeshd.pki.certs import ensure_certificates
from ragmeshd.runtime.channels import metadata_interceptors
from ragmeshd.runtime.tls import channel_credentials
from ragmeshd.settings import load_settings
from ragmeshd.state import MeshLayout
from ragmeshd.supervisor.plan import MeshState

SAMPLE_INTERVAL_S = 0.5
PROFILE_COLLECTION = "profile"
_CALL_NAMES = ("Embed(8 texts)", "Search", "AugmentQuery")
_TEXTS = [f"passage {i} about envoy retries, vector search and batching" for i in range(64)]


def register(subparsers: argparse._SubParsersAction) -> None:
    profile = subparsers.add_parser(
        "profile",
        help="memory and CPU of a running mesh's processes, idle and under load",
        description="Sample the RSS and CPU of every process of the mesh `ragmesh up` runs"
        " (children included), idle for --seconds, then for --seconds under a mixed load"
        " through Envoy (Embed, Search, AugmentQuery, --concurrency each). Needs psutil.",
    )
    profile.add_argument("--seconds", type=float, default=20.0)
    profile.add_argument("--concurrency", type=int, default=4)
    profile.set_defaults(handler=_profile)


@dataclass
class _Samples:
    rss_mib: list[float] = field(default_factory=list)
    cpu_cores: list[float] = field(default_factory=list)

    def line(self) -> str:
        if not self.rss_mib:
            return "no samples"
        rss, cpu = sorted(self.rss_mib), sorted(self.cpu_cores)
        return (
            f"RSS mean {sum(rss) / len(rss):6.0f} MiB  max {rss[-1]:6.0f} MiB   "
            f"CPU mean {sum(cpu) / len(cpu):4.2f}  p95 {cpu[int(0.95 * (len(cpu) - 1))]:4.2f} cores"
        )


def _profile(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    import psutil  # a dev dependency: profiling is done on a workstation, not in the image

    settings = load_settings()
    layout = MeshLayout(settings.state_dir)
    state = MeshState.read(layout.mesh_state)
    processes = {name: psutil.Process(pid) for name, pid in state.pids.items()}
    idle = await _sample(processes, args.seconds, None)
    certs = ensure_certificates(layout.certs_dir)
    key = layout.admin_key.read_text().strip()
    host, port = state.client_listen.rsplit(":", 1)
    # A wildcard listen address is called on loopback (a comparison, not a bind: B104).
    endpoint = f"{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # nosec B104
    channel = grpc.aio.secure_channel(
        endpoint,
        channel_credentials(certs.ca, certs.client.cert, certs.client.key),
        interceptors=metadata_interceptors(key),
    )
    async with channel:
        calls = await _calls(channel)
        done, failed = [0] * len(calls), dict[str, int]()
        load = _load(calls, args.concurrency, done, failed)
        loaded = await _sample(processes, args.seconds, load)
    rates = ", ".join(
        f"{name} {count / args.seconds:.1f}/s"
        for name, count in zip(_CALL_NAMES, done, strict=True)
    )
    print(f"load: {rates}; failed calls {failed or 'none'}")
    print(f"machine: load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'process':<16} {'':<7} figures ({args.seconds:g} s each, sampled every 0.5 s)")
    for name in processes:
        print(f"{name:<16} idle    {idle[name].line()}")
        print(f"{'':<16} loaded  {loaded[name].line()}")
    return 0


async def _calls(channel: grpc.aio.Channel) -> list[Callable[[], Awaitable[Any]]]:
    from ragmesh.coordinator.v1 import coordinator_service_pb2 as coordinator
    from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as coordinator_grpc
    from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings
    from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
    from ragmesh.search.v1 import search_service_pb2 as search
    from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc

    embed = embeddings_grpc.EmbeddingsServiceStub(channel)
    searcher = search_grpc.SearchServiceStub(channel)
    coordinate = coordinator_grpc.CoordinatorServiceStub(channel)
    try:
        await searcher.CreateCollection(search.CreateCollectionRequest(name=PROFILE_COLLECTION))
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    documents = [search.Document(id=str(i), text=text) for i, text in enumerate(_TEXTS)]
    await searcher.UpsertDocuments(
        search.UpsertDocumentsRequest(collection=PROFILE_COLLECTION, documents=documents)
    )
    return [
        lambda: embed.Embed(embeddings.EmbedRequest(inputs=_TEXTS[:8])),
        lambda: searcher.Search(
            search.SearchRequest(collection=PROFILE_COLLECTION, query="envoy retries", top_k=5)
        ),
        lambda: coordinate.AugmentQuery(
            coordinator.AugmentQueryRequest(query="how does envoy retry?")
        ),
    ]


async def _load(
    calls: list[Callable[[], Awaitable[Any]]],
    concurrency: int,
    done: list[int],
    failed: dict[str, int],
) -> None:
    async def worker(index: int) -> None:
        while True:
            try:
                await calls[index]()
                done[index] += 1
            except grpc.aio.AioRpcError as error:
                # Overload answers (shed load, deadlines) are part of the measurement.
                failed[error.code().name] = failed.get(error.code().name, 0) + 1

    await asyncio.gather(*(worker(i) for i in range(len(calls)) for _ in range(concurrency)))


async def _sample(
    processes: dict[str, Any], seconds: float, load: Awaitable[None] | None
) -> dict[str, _Samples]:
    import psutil

    samples = {name: _Samples() for name in processes}
    trees = {name: [p, *p.children(recursive=True)] for name, p in processes.items()}
    for tree in trees.values():
        for process in tree:
            process.cpu_percent(None)  # the first reading only sets the baseline
    task = asyncio.ensure_future(load) if load is not None else None
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            if task is not None and task.done():
                task.result()  # an unexpected error ends the profile
            for name, tree in trees.items():
                try:
                    rss = sum(p.memory_info().rss for p in tree) / 2**20
                    cpu = sum(p.cpu_percent(None) for p in tree) / 100
                except psutil.NoSuchProcess:
                    continue
                samples[name].rss_mib.append(rss)
                samples[name].cpu_cores.append(cpu)
    finally:
        if task is not None:
            task.cancel()
    return samples
