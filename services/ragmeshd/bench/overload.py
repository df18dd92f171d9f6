"""`ragmesh bench overload`: the embeddings service driven at several times its capacity
through Envoy (mTLS + an API key), to show that load shedding keeps accepted calls fast.

One run, on one mesh:
  1. capacity: single-text Embed calls, closed loop, for --capacity-duration → C calls/s;
  2. overload, Envoy sheds: an open loop at --factor x C calls/s for --duration,
     each call with a 30 s deadline; every answer is timed and classified by status code.
     Envoy lets each embeddings replica hold embeddings.envoy_max_requests calls and refuses
     the rest itself (UNAVAILABLE, flag UO) before they cost Python anything;
  3. the comparison, side by side on the same mesh: the same open loop with Envoy's cap
     lifted (a runtime override on its admin socket), so only the server sheds (its
     concurrency limit and queue-wait check, RESOURCE_EXHAUSTED); the cap is then restored;
  4. afterwards: Envoy reports every cluster healthy and an Embed succeeds.
It prints accepted calls' p50/p99 next to the capacity run's, how fast the excess was refused
and with which codes, and the CPU cores each side used in each phase (the load generator is
this process and shares the machine). The mesh is the running one of the state folder
with --running (`make up`), or one started here.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import grpc

from ragmesh.embeddings.v1 import embeddings_service_pb2 as pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc
from ragmeshd.bench.embed_server import bench_texts
from ragmeshd.bench.mesh import MeshHandle, bench_mesh
from ragmeshd.bench.overload_load import EmbedLoad, Outcome, serialized_requests
from ragmeshd.bench.report import BenchReport
from ragmeshd.envoy.admin import clusters_healthy, set_runtime
from ragmeshd.runtime.keystore import parse_duration
from ragmeshd.settings import load_settings

# Envoy's runtime key for the embeddings cluster's cap on calls in flight.
CAP_RUNTIME_KEY = "circuit_breakers.embeddings.default.max_requests"
UNCAPPED = "1000000"
# Between phases: the queue of the phase before drains and the model is idle again.
SETTLE_S = 5.0
# Distinct texts, so that the embeddings cache answers none of the calls.
TEXTS = 150_000


def register_overload_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Adds `ragmesh bench overload` to the `bench` command's subcommands."""
    overload = bench_subparsers.add_parser(
        "overload",
        help="embeddings at several times its capacity through Envoy: load shedding",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    overload.add_argument(
        "--running",
        action="store_true",
        help="measure the running mesh of the state folder (ragmesh --state-dir, `make up`)"
        " instead of starting one",
    )
    overload.add_argument(
        "--factor", type=float, default=4.0, help="offered load, times capacity (default 4)"
    )
    overload.add_argument(
        "--duration",
        dest="duration_s",
        type=parse_duration,
        default=30.0,
        metavar="DURATION",
        help="length of each overload phase (default 30s)",
    )
    overload.add_argument(
        "--capacity-duration",
        dest="capacity_s",
        type=parse_duration,
        default=10.0,
        metavar="DURATION",
        help="length of the closed-loop run that measures capacity (default 10s)",
    )
    # The older spellings, bare numbers of seconds.
    overload.add_argument("--duration-s", dest="duration_s", type=float, help=argparse.SUPPRESS)
    overload.add_argument("--capacity-s", dest="capacity_s", type=float, help=argparse.SUPPRESS)
    overload.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="calls in flight in the capacity run (default 32)",
    )
    overload.add_argument(
        "--no-comparison",
        action="store_true",
        help="skip the run with Envoy's cap lifted (needs the admin socket of `ragmesh up`)",
    )
    overload.set_defaults(handler=_bench_overload)


def _bench_overload(args: argparse.Namespace) -> int:
    def measure() -> BenchReport:
        settings = load_settings()
        running = settings.state_dir.resolve() if args.running else None
        with bench_mesh(running, settings.models_dir) as mesh:
            return asyncio.run(_run(mesh, args))

    return int(args.emit_report(args, "overload", measure))


async def _run(mesh: MeshHandle, args: argparse.Namespace) -> BenchReport:
    print(f"load average before: {load_average()}", flush=True)
    requests = serialized_requests([f"{t} #{i}" for i, t in enumerate(bench_texts(TEXTS))])
    async with mesh.channel() as channel, mesh.channel(key_interceptors=False) as bare:
        client = pb_grpc.EmbeddingsServiceStub(channel)
        await client.Embed(pb.EmbedRequest(inputs=["warm up"]), timeout=60)
        load = EmbedLoad(bare, mesh.api_key, requests, dict(mesh.state.pids))

        capacity = await load.closed_loop(args.concurrency, args.capacity_s)
        rate = capacity.count("OK") / capacity.elapsed_s
        offered = rate * args.factor
        print(
            f"capacity: {rate:.1f} calls/s (closed loop, concurrency {args.concurrency},"
            f" {capacity.elapsed_s:.1f} s); offering {offered:.1f} calls/s for"
            f" {args.duration_s:g} s",
            flush=True,
        )
        phases = {"capacity": capacity}
        await asyncio.sleep(SETTLE_S)
        phases["Envoy sheds"] = await load.open_loop(offered, args.duration_s)
        admin_socket = mesh.state.admin_socket
        if not args.no_comparison and admin_socket:
            await asyncio.sleep(SETTLE_S)
            await set_runtime(admin_socket, CAP_RUNTIME_KEY, UNCAPPED)
            try:
                phases["servers shed only"] = await load.open_loop(offered, args.duration_s)
            finally:
                await set_runtime(admin_socket, CAP_RUNTIME_KEY, "")
        healthy = await _healthy_after(client, mesh)
    numbers = {
        "capacity_calls_per_s": rate,
        "offered_calls_per_s": offered,
        "phases": {
            name: {
                "elapsed_s": outcome.elapsed_s,
                "cpu_cores": outcome.cores,
                "codes": {
                    code: {
                        "calls": outcome.count(code),
                        "p50_ms": outcome.percentile_ms(code, 0.5),
                        "p99_ms": outcome.percentile_ms(code, 0.99),
                    }
                    for code in outcome.latencies_s
                },
            }
            for name, outcome in phases.items()
        },
        "healthy_afterwards": healthy,
    }
    return BenchReport(_report(phases, offered, healthy), numbers)


async def _healthy_after(client: pb_grpc.EmbeddingsServiceStub, mesh: MeshHandle) -> bool:
    """Within 10 s of the overload: every cluster healthy in Envoy and an Embed answered."""
    clusters = sorted({replica.service for replica in mesh.state.replicas})
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        try:
            await client.Embed(pb.EmbedRequest(inputs=["after the storm"]), timeout=5)
            if await clusters_healthy(mesh.state.admin_listen, clusters):
                return True
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.5)
    return False


def _report(phases: dict[str, Outcome], offered: float, healthy: bool) -> str:
    lines = [f"{'':<36}{'calls':>8} {'per s':>8} {'p50 ms':>9} {'p99 ms':>9}"]
    for name, outcome in phases.items():
        for code in ["OK", *sorted(c for c in outcome.latencies_s if c != "OK")]:
            count = outcome.count(code)
            label = f"{name}, {'accepted' if code == 'OK' else code}"
            lines.append(
                f"{label:<36}{count:>8} {count / outcome.elapsed_s:>8.1f}"
                f" {outcome.percentile_ms(code, 0.5):>9.1f}"
                f" {outcome.percentile_ms(code, 0.99):>9.1f}"
            )
    lines.append(f"CPU cores used (of {os.cpu_count()}):")
    for name, outcome in phases.items():
        shares = ", ".join(f"{who} {cores:.2f}" for who, cores in outcome.cores.items())
        lines.append(f"  {name}: {shares}")
    for name, outcome in phases.items():
        if name != "capacity":
            lines += _verdict(name, outcome, offered, phases["capacity"])
    lines += [f"mesh healthy afterwards: {healthy}", f"load average after: {load_average()}"]
    return "\n".join(lines)


def _verdict(name: str, overload: Outcome, offered: float, capacity: Outcome) -> list[str]:
    total = sum(len(v) for v in overload.latencies_s.values())
    refused = [code for code in overload.latencies_s if code != "OK"]
    accepted_p99 = overload.percentile_ms("OK", 0.99)
    refused_p99 = max((overload.percentile_ms(c, 0.99) for c in refused), default=0.0)
    shed_codes = set(refused) <= {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}
    kept = overload.count("OK") / overload.elapsed_s / (capacity.count("OK") / capacity.elapsed_s)
    return [
        f"{name}: {total} calls offered at {offered:.1f}/s over {overload.elapsed_s:.1f} s;"
        f" accepted {kept:.2f}x capacity's throughput",
        f"  accepted p99 {accepted_p99:.0f} ms (target < 1000): "
        + ("met" if accepted_p99 < 1000 else "NOT met"),
        f"  refused p99 {refused_p99:.1f} ms (target < 50) with {sorted(refused) or 'none'}: "
        + ("met" if refused_p99 < 50 and shed_codes else "NOT met"),
        f"  INTERNAL answers: {overload.count('INTERNAL')}",
    ]


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"
