"""`ragmesh bench overload`: the embeddings service driven at several times its capacity
through Envoy (mTLS + an API key), to show that load shedding keeps accepted calls fast.

One run, on one mesh:
  1. capacity: single-text Embed calls, closed loop, for --capacity-s seconds → C calls/s;
  2. overload: an open loop at --factor x C calls/s for --duration-s seconds, each call with a
     30 s deadline; every answer is timed and classified by status code;
  3. afterwards: Envoy reports every cluster healthy and an Embed succeeds.
It prints accepted calls' p50/p99 next to the capacity run's, how fast the excess was refused
and with which codes. The mesh is the one in --state-dir (`make up`), or one started here.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ragmesh.embeddings.v1 import embeddings_service_pb2 as pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc
from services.commands.bench_embed_server import bench_texts
from services.mesh.envoy_admin import clusters_healthy
from services.mesh.layout import ragmesh_argv
from services.runtime.channels import metadata_interceptors
from services.runtime.tls import channel_credentials

CALL_DEADLINE_S = 30.0
MESH_START_TIMEOUT_S = 600.0


def register_overload_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Adds `ragmesh bench overload` to the `bench` command's subcommands."""
    overload = bench_subparsers.add_parser(
        "overload",
        help="embeddings at several times its capacity through Envoy: load shedding",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    overload.add_argument("--state-dir", help="a running mesh's state directory (`make up`)")
    overload.add_argument("--factor", type=float, default=4.0, help="times capacity (4)")
    overload.add_argument("--duration-s", type=float, default=30.0)
    overload.add_argument("--capacity-s", type=float, default=10.0)
    overload.add_argument("--concurrency", type=int, default=32, help="of the capacity run")
    overload.set_defaults(handler=_bench_overload)


@dataclass
class Outcome:
    """Every call of one phase: its status code and latency."""

    latencies_s: dict[str, list[float]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    elapsed_s: float = 0.0

    def count(self, code: str) -> int:
        return len(self.latencies_s.get(code, []))

    def percentile_ms(self, code: str, fraction: float) -> float:
        ordered = sorted(self.latencies_s.get(code, []))
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


@dataclass(frozen=True)
class MeshAccess:
    endpoint: str
    admin: str
    clusters: list[str]
    credentials: grpc.ChannelCredentials
    api_key: str


def _bench_overload(args: argparse.Namespace) -> int:
    with _mesh(args.state_dir) as access:
        return asyncio.run(_run(access, args))


async def _run(access: MeshAccess, args: argparse.Namespace) -> int:
    interceptors = metadata_interceptors(access.api_key)
    async with grpc.aio.secure_channel(
        access.endpoint, access.credentials, interceptors=interceptors
    ) as channel:
        client = pb_grpc.EmbeddingsServiceStub(channel)
        texts = iter(f"{text} #{i}" for i, text in enumerate(bench_texts(200_000)))
        await client.Embed(pb.EmbedRequest(inputs=[next(texts)]), timeout=60)  # warm up

        capacity = await _capacity(client, texts, args.concurrency, args.capacity_s)
        rate = capacity.count("OK") / capacity.elapsed_s
        offered = rate * args.factor
        print(
            f"capacity: {rate:.1f} calls/s (closed loop, concurrency {args.concurrency},"
            f" {capacity.elapsed_s:.1f} s); offering {offered:.1f} calls/s for"
            f" {args.duration_s:g} s",
            flush=True,
        )
        overload = await _open_loop(client, texts, offered, args.duration_s)
        healthy = await _healthy_after(client, access)
    print(_report(capacity, overload, offered, healthy, load_average()), flush=True)
    return 0


async def _capacity(
    client: pb_grpc.EmbeddingsServiceStub, texts: Iterator[str], concurrency: int, seconds: float
) -> Outcome:
    """A closed loop: `concurrency` callers, each sending its next call when answered."""
    outcome = Outcome()
    started = time.monotonic()

    async def caller() -> None:
        while time.monotonic() - started < seconds:
            await _timed(client, next(texts), outcome)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    outcome.elapsed_s = time.monotonic() - started
    return outcome


async def _open_loop(
    client: pb_grpc.EmbeddingsServiceStub, texts: Iterator[str], rate: float, seconds: float
) -> Outcome:
    """Start a call every 1/rate s whatever the answers (an open loop, as real clients)."""
    outcome = Outcome()
    in_flight: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - started < seconds:
        due = int((now - started) * rate) + 1
        for _ in range(due - sent):
            task = asyncio.ensure_future(_timed(client, next(texts), outcome))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        sent = due
        await asyncio.sleep(0.002)
    await asyncio.gather(*in_flight)
    outcome.elapsed_s = time.monotonic() - started
    return outcome


async def _timed(client: pb_grpc.EmbeddingsServiceStub, text: str, outcome: Outcome) -> None:
    started = time.perf_counter()
    try:
        await client.Embed(pb.EmbedRequest(inputs=[text]), timeout=CALL_DEADLINE_S)
        code = "OK"
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
    outcome.latencies_s[code].append(time.perf_counter() - started)


async def _healthy_after(client: pb_grpc.EmbeddingsServiceStub, access: MeshAccess) -> bool:
    """Within 10 s of the overload: every cluster healthy in Envoy and an Embed answered."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            await client.Embed(pb.EmbedRequest(inputs=["after the storm"]), timeout=5)
            if await clusters_healthy(access.admin, access.clusters):
                return True
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.5)
    return False


def _report(capacity: Outcome, overload: Outcome, offered: float, healthy: bool, load: str) -> str:
    total = sum(len(v) for v in overload.latencies_s.values())
    refused = {code: v for code, v in overload.latencies_s.items() if code != "OK"}
    lines = [
        f"overload: {total} calls offered at {offered:.1f}/s over {overload.elapsed_s:.1f} s",
        f"{'':<22}{'calls':>8} {'per s':>8} {'p50 ms':>9} {'p99 ms':>9}",
    ]
    for label, outcome, code in (
        ("capacity, accepted", capacity, "OK"),
        ("overload, accepted", overload, "OK"),
        *((f"overload, {code}", overload, code) for code in sorted(refused)),
    ):
        count = outcome.count(code)
        lines.append(
            f"{label:<22}{count:>8} {count / outcome.elapsed_s:>8.1f}"
            f" {outcome.percentile_ms(code, 0.5):>9.1f} {outcome.percentile_ms(code, 0.99):>9.1f}"
        )
    accepted_p99 = overload.percentile_ms("OK", 0.99)
    refused_p99 = max((overload.percentile_ms(c, 0.99) for c in refused), default=0.0)
    shed_codes = set(refused) <= {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}
    lines += [
        f"accepted p99 {accepted_p99:.0f} ms (target < 1000): "
        + ("met" if accepted_p99 < 1000 else "NOT met"),
        f"refused p99 {refused_p99:.1f} ms (target < 50) with {sorted(refused) or 'none'}: "
        + ("met" if refused_p99 < 50 and shed_codes else "NOT met"),
        f"INTERNAL answers: {overload.count('INTERNAL')}; mesh healthy afterwards: {healthy}",
        f"load average: {load}",
    ]
    return "\n".join(lines)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


@contextmanager
def _mesh(state_dir: str | None) -> Iterator[MeshAccess]:
    if state_dir:
        yield _access(Path(state_dir).resolve())
        return
    with tempfile.TemporaryDirectory(prefix="ragmesh-overload-") as tmp:
        yield from _started_mesh(Path(tmp))


def _started_mesh(state_dir: Path) -> Iterator[MeshAccess]:
    """`ragmesh up` on free loopback ports under `state_dir`, stopped with Ctrl-C after."""
    state_dir.chmod(0o755)  # the embedded PostgreSQL runs as its own user
    env = {
        **os.environ,
        "RAGMESH_STATE_DIR": str(state_dir),
        "RAGMESH_MESH__CLIENT_LISTEN": f"127.0.0.1:{_free_port()}",
        "RAGMESH_MESH__INTERNAL_LISTEN": f"127.0.0.1:{_free_port()}",
        "RAGMESH_MESH__ADMIN_LISTEN": f"127.0.0.1:{_free_port()}",
        "RAGMESH_EMBEDDINGS__LISTEN": f"127.0.0.1:{_free_port()}",
        "RAGMESH_SEARCH__LISTEN": f"127.0.0.1:{_free_port()}",
        "RAGMESH_COORDINATOR__LISTEN": f"127.0.0.1:{_free_port()}",
        "RAGMESH_OPENAI__LISTEN": f"127.0.0.1:{_free_port()}",
        "RAGMESH_EMBEDDINGS__METRICS_LISTEN": "",
        "RAGMESH_SEARCH__METRICS_LISTEN": "",
        "RAGMESH_COORDINATOR__METRICS_LISTEN": "",
    }
    log_path = state_dir / "up.log"
    print(f"starting a mesh under {state_dir} (log: {log_path})", file=sys.stderr, flush=True)
    with log_path.open("wb") as log:
        popen = subprocess.Popen(ragmesh_argv("up"), stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + MESH_START_TIMEOUT_S
        while not (state_dir / "mesh.json").exists():
            if popen.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the mesh did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield _access(state_dir)
    finally:
        popen.send_signal(2)
        try:
            popen.wait(60)
        except subprocess.TimeoutExpired:
            popen.kill()


def _access(state_dir: Path) -> MeshAccess:
    state = json.loads((state_dir / "mesh.json").read_text())
    host, _, port = state["client_listen"].rpartition(":")
    certs = state_dir / "certs"
    return MeshAccess(
        endpoint=f"{_reachable(host)}:{port}",
        admin=state["admin_listen"],
        clusters=sorted({replica["service"] for replica in state["replicas"]}),
        credentials=channel_credentials(
            certs / "ca.pem", certs / "clients" / "client.pem", certs / "clients" / "client-key.pem"
        ),
        api_key=(state_dir / "keys" / "admin.key").read_text().strip(),
    )


def _reachable(host: str) -> str:
    """A listener on every interface is reached on loopback here."""
    if not host or ipaddress.ip_address(host.strip("[]")).is_unspecified:
        return "127.0.0.1"
    return host


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
