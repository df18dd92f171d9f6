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

from ragmeshd.commands.convention import (
    EXIT_UNREACHABLE,
    CommandError,
    add_json_option,
    check_mesh_client,
    mesh_channel,
    mesh_target,
    parse_duration,
    print_json,
    rpc_failure,
    settings_or_exit,
)
from ragmeshd.state import MeshLayout
from ragmeshd.supervisor.plan import MeshState

SAMPLE_INTERVAL_S = 0.5
# The longest the loaded phase goes on past --duration waiting for --min-calls.
ENOUGH_WAIT_S = 120.0
PROFILE_COLLECTION = "profile"
_CALL_NAMES = ("Embed(8 texts)", "Search", "AugmentQuery")
_TEXTS = [f"passage {i} about envoy retries, vector search and batching" for i in range(64)]


def register(subparsers: argparse._SubParsersAction) -> None:
    profile = subparsers.add_parser(
        "profile",
        help="memory and CPU of a running mesh's processes, idle and under load",
        description="Sample the RSS and CPU of every process of the mesh `ragmesh up` runs"
        " (children included), idle for --duration, then for --duration under a mixed load"
        " through Envoy (Embed, Search, AugmentQuery, --concurrency each; the loaded phase"
        " goes on until each kind of call has answered --min-calls times). Needs psutil.",
    )
    profile.add_argument(
        "--duration",
        dest="seconds",
        type=parse_duration,
        default=20.0,
        metavar="DURATION",
        help="length of the idle and of the loaded phase (default 20s)",
    )
    # The older spelling, a bare number of seconds.
    profile.add_argument("--seconds", dest="seconds", type=float, help=argparse.SUPPRESS)
    profile.add_argument(
        "--concurrency", type=int, default=4, help="callers per kind of call (default 4)"
    )
    profile.add_argument(
        "--min-calls",
        type=int,
        default=0,
        help="keep the load on until each kind of call has answered this many times (default 0)",
    )
    add_json_option(profile)
    profile.set_defaults(handler=_profile)


@dataclass
class _Samples:
    rss_mib: list[float] = field(default_factory=list)
    cpu_cores: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        if not self.rss_mib:
            return {}
        rss, cpu = sorted(self.rss_mib), sorted(self.cpu_cores)
        return {
            "rss_mean_mib": sum(rss) / len(rss),
            "rss_max_mib": rss[-1],
            "cpu_mean_cores": sum(cpu) / len(cpu),
            "cpu_p95_cores": cpu[int(0.95 * (len(cpu) - 1))],
        }

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

    settings = settings_or_exit()
    layout = MeshLayout(settings.state_dir)
    if not layout.mesh_state.exists():
        raise CommandError(
            f"no mesh runs: {layout.mesh_state} does not exist (start one with `ragmesh up`)",
            EXIT_UNREACHABLE,
        )
    state = MeshState.read(layout.mesh_state)
    processes = {name: psutil.Process(pid) for name, pid in state.pids.items()}
    check_mesh_client(settings, args)
    idle = await _sample(processes, args.seconds, None)
    target = mesh_target(settings, None)
    try:
        async with mesh_channel(settings, args) as channel:
            calls = await _calls(channel)
            done, failed = [0] * len(calls), dict[str, int]()
            load = _load(calls, args.concurrency, done, failed)
            started = time.monotonic()
            loaded = await _sample(
                processes, args.seconds, load, lambda: min(done) >= args.min_calls
            )
            elapsed = time.monotonic() - started
    except grpc.aio.AioRpcError as error:
        raise rpc_failure(error, target) from None
    calls_done = dict(zip(_CALL_NAMES, done, strict=True))
    if args.json:
        print_json(
            {
                "duration_s": args.seconds,
                "loaded_s": elapsed,
                "calls": calls_done,
                "calls_per_s": {name: n / elapsed for name, n in calls_done.items()},
                "failed": failed,
                "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
                "processes": {
                    name: {"idle": idle[name].summary(), "loaded": loaded[name].summary()}
                    for name in processes
                },
            }
        )
        return 0
    rates = ", ".join(f"{name} {n / elapsed:.1f}/s ({n} calls)" for name, n in calls_done.items())
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
    processes: dict[str, Any],
    seconds: float,
    load: Awaitable[None] | None,
    enough: Callable[[], bool] = lambda: True,
) -> dict[str, _Samples]:
    """Samples every SAMPLE_INTERVAL_S for `seconds`, and after that until `enough()` (for
    at most ENOUGH_WAIT_S more: a kind of call that never answers ends the wait)."""
    import psutil

    samples = {name: _Samples() for name in processes}
    trees = {name: [p, *p.children(recursive=True)] for name, p in processes.items()}
    for tree in trees.values():
        for process in tree:
            process.cpu_percent(None)  # the first reading only sets the baseline
    task = asyncio.ensure_future(load) if load is not None else None
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline or (
            not enough() and time.monotonic() < deadline + ENOUGH_WAIT_S
        ):
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
