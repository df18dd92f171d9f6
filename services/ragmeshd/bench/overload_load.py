"""The load generator of `ragmesh bench overload`: single-text Embed calls through Envoy,
as light on the client side as Python allows, because it shares the machine's cores with
the mesh it measures.

Every request is serialized before the clock starts and sent as bytes on a method without
(de)serializers, the API key travels as plain call metadata (no client interceptors), and
answers are not decoded: per call the generator pays for gRPC and TLS only. Each phase also
reports the CPU each side used, so a reader can see how much of the machine the generator
itself took.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc

from ragmesh.embeddings.v1 import embeddings_service_pb2 as pb
from ragmeshd.bench.embed_mesh import machine_busy_s
from ragmeshd.bench.mesh import cpu_seconds

EMBED_METHOD = "/ragmesh.embeddings.v1.EmbeddingsService/Embed"
CALL_DEADLINE_S = 30.0
# The mesh's processes on an Embed call's path: Envoy, the rate-limit service it asks about
# a call's key when it may carry a limit (the bench's key has none), and the embeddings
# replicas (model included).
REPORTED_PROCESSES = ("envoy", "ratelimit", "embeddings")


@dataclass
class Outcome:
    """Every call of one phase: its status code and latency, and who used the CPU."""

    latencies_s: dict[str, list[float]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    elapsed_s: float = 0.0
    # CPU cores used on average during the phase, by who used them.
    cores: dict[str, float] = field(default_factory=dict)

    def count(self, code: str) -> int:
        return len(self.latencies_s.get(code, []))

    def percentile_ms(self, code: str, fraction: float) -> float:
        ordered = sorted(self.latencies_s.get(code, []))
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def serialized_requests(texts: list[str]) -> Iterator[bytes]:
    """One EmbedRequest per text, serialized up front, handed out once each."""
    return iter([pb.EmbedRequest(inputs=[text]).SerializeToString() for text in texts])


class EmbedLoad:
    """Times Embed calls on one channel; `pids` (name → pid) are the mesh's processes whose
    CPU each phase reports."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        api_key: str,
        requests: Iterator[bytes],
        pids: dict[str, int],
    ) -> None:
        # No serializers: requests go out as the bytes given, answers stay bytes.
        self._embed = channel.unary_unary(EMBED_METHOD)
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._requests = requests
        self._pids = {
            name: pid for name, pid in pids.items() if name.startswith(REPORTED_PROCESSES)
        }

    async def closed_loop(self, concurrency: int, seconds: float) -> Outcome:
        """`concurrency` callers, each sending its next call when answered."""
        outcome = Outcome()
        with self._cpu(outcome):
            started = time.monotonic()

            async def caller() -> None:
                while time.monotonic() - started < seconds:
                    await self._timed(outcome)

            await asyncio.gather(*(caller() for _ in range(concurrency)))
            outcome.elapsed_s = time.monotonic() - started
        return outcome

    async def open_loop(self, rate: float, seconds: float) -> Outcome:
        """A call every 1/rate s whatever the answers (an open loop, as real clients)."""
        outcome = Outcome()
        in_flight: set[asyncio.Task[None]] = set()
        with self._cpu(outcome):
            started = time.monotonic()
            sent = 0
            while (now := time.monotonic()) - started < seconds:
                due = int((now - started) * rate) + 1
                for _ in range(due - sent):
                    task = asyncio.ensure_future(self._timed(outcome))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                sent = due
                await asyncio.sleep(0.002)
            await asyncio.gather(*in_flight)
            outcome.elapsed_s = time.monotonic() - started
        return outcome

    async def _timed(self, outcome: Outcome) -> None:
        request = next(self._requests)
        started = time.perf_counter()
        try:
            await self._embed(request, timeout=CALL_DEADLINE_S, metadata=self._metadata)
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        outcome.latencies_s[code].append(time.perf_counter() - started)

    def _cpu(self, outcome: Outcome) -> _CpuShare:
        return _CpuShare(outcome, self._pids)


class _CpuShare:
    """Fills `outcome.cores` with the CPU cores each side used while the block ran."""

    def __init__(self, outcome: Outcome, pids: dict[str, int]) -> None:
        self._outcome = outcome
        self._pids = pids

    def __enter__(self) -> None:
        self._own = sum(os.times()[:2])
        self._machine = machine_busy_s()
        self._mesh = {name: cpu_seconds(pid) for name, pid in self._pids.items()}

    def __exit__(self, *_: object) -> None:
        elapsed = self._outcome.elapsed_s
        if elapsed <= 0:
            return
        cores = {"load generator": (sum(os.times()[:2]) - self._own) / elapsed}
        for name in sorted(self._mesh):
            cores[name] = (cpu_seconds(self._pids[name]) - self._mesh[name]) / elapsed
        machine = (machine_busy_s() - self._machine) / elapsed
        cores["anything else"] = max(0.0, machine - sum(cores.values()))
        self._outcome.cores = cores
