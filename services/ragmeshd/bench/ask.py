"""`ragmesh bench ask`: grounded answers from the local model, through Envoy (mTLS + an API
key), on the running mesh of the state folder with --running (`make up`) or one started here.

It loads a small fixed set of documents into a collection of its own, then asks a fixed set
of questions about them with Ask, forced to the LOCAL route, at concurrency 1 and then 4,
and prints per run: Ask latency p50/p99, the time to the first answer chunk as the client
sees it (retrieval included), and, from the llm service's own counters (LlmService.Info
before and after), its time to first token and tokens/s. It also reports the share of
answers citing at least one valid source and the share whose cited sources include the
expected document (reported, not asserted: a 135M model does not always cite).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import grpc

from ragmesh.coordinator.v1 import coordinator_service_pb2 as pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as pb_grpc
from ragmesh.llm.v1 import llm_service_pb2 as llm_pb
from ragmesh.llm.v1 import llm_service_pb2_grpc as llm_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmesh.search.v1 import search_service_pb2_grpc as search_grpc
from ragmeshd.bench.mesh import MeshHandle, bench_mesh
from ragmeshd.bench.report import BenchReport
from ragmeshd.settings import load_settings

COLLECTION = "bench-ask"
# (document id, source file, title, text): short, distinct facts a small model can quote.
DOCUMENTS = (
    ("lighthouse", "notes/lighthouse.md", "The Hook Head lighthouse",
     "The Hook Head lighthouse in County Wexford, Ireland, was built in the 12th century and"
     " is one of the oldest working lighthouses in the world. Monks kept a beacon there."),
    ("sourdough", "notes/sourdough.md", "Sourdough starter",
     "A sourdough starter is fed with equal weights of flour and water every day. It is ready"
     " to bake with when it doubles in size within six hours of feeding."),
    ("bees", "notes/bees.md", "Honey bees",
     "A honey bee colony has one queen, thousands of female workers and a few hundred male"
     " drones. Workers live about six weeks in summer."),
    ("volcano", "notes/volcano.md", "Mount Etna",
     "Mount Etna on Sicily is the tallest active volcano in Europe, about 3,300 metres high,"
     " and erupts often; its lava flows reached the city of Catania in 1669."),
    ("tea", "notes/tea.md", "Green tea",
     "Green tea should be brewed with water at about 80 degrees Celsius for two to three"
     " minutes; boiling water makes it bitter."),
    ("bicycle", "notes/bicycle.md", "Bicycle chains",
     "A bicycle chain should be cleaned and oiled about every 300 kilometres, and replaced"
     " when it has stretched by 0.5 percent."),
)  # fmt: skip
# (question, the document that answers it).
QUESTIONS = (
    ("How old is the Hook Head lighthouse?", "lighthouse"),
    ("How often should a sourdough starter be fed?", "sourdough"),
    ("How long do worker bees live in summer?", "bees"),
    ("How tall is Mount Etna?", "volcano"),
    ("At what temperature should green tea be brewed?", "tea"),
    ("When should a bicycle chain be replaced?", "bicycle"),
    ("When did lava from Etna reach Catania?", "volcano"),
    ("How many queens does a honey bee colony have?", "bees"),
)
ASK_TIMEOUT_S = 180.0


@dataclass
class AskResult:
    latency_s: float
    first_chunk_s: float
    route: int
    answer: str
    cited_documents: list[str]
    cited_any: bool
    expected: str


def register_ask_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Adds `ragmesh bench ask` to the `bench` command's subcommands."""
    ask = bench_subparsers.add_parser(
        "ask",
        help="grounded answers from the local model through Envoy: time to first token,"
        " tokens/s, Ask p50/p99 at concurrency 1 and 4",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ask.add_argument(
        "--running",
        action="store_true",
        help="measure the running mesh of the state folder (ragmesh --state-dir, `make up`)"
        " instead of starting one",
    )
    ask.add_argument(
        "--rounds", type=int, default=2, help="times each question is asked per concurrency (2)"
    )
    ask.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 4], help="levels to run (1 4)"
    )
    ask.add_argument("--max-answer-tokens", type=int, default=128, help="answer length cap (128)")
    ask.set_defaults(handler=_bench_ask)


def _bench_ask(args: argparse.Namespace) -> int:
    def measure() -> BenchReport:
        settings = load_settings()
        running = settings.state_dir.resolve() if args.running else None
        with bench_mesh(running, settings.models_dir) as mesh:
            report = asyncio.run(
                run_bench(mesh, args.rounds, args.concurrency, args.max_answer_tokens)
            )
        return BenchReport(format_report(report), report)

    return int(args.emit_report(args, "ask", measure))


async def _load_documents(channel: grpc.aio.Channel) -> None:
    search = search_grpc.SearchServiceStub(channel)
    try:
        await search.CreateCollection(
            search_pb.CreateCollectionRequest(name=COLLECTION), timeout=60
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    documents = [
        search_pb.Document(id=doc_id, text=text, source=source, title=title)
        for doc_id, source, title, text in DOCUMENTS
    ]
    await search.UpsertDocuments(
        search_pb.UpsertDocumentsRequest(collection=COLLECTION, documents=documents), timeout=120
    )


async def _ask(client: pb_grpc.CoordinatorServiceStub, question: str, expected: str,
               max_tokens: int) -> AskResult:  # fmt: skip
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    sources: list[pb.Source] = []
    summary = pb.AskSummary()
    request = pb.AskRequest(
        query=question,
        collections=[COLLECTION],
        force=pb.DECISION_LOCAL,
        max_answer_tokens=max_tokens,
    )
    async for response in client.Ask(request, timeout=ASK_TIMEOUT_S):
        event = response.WhichOneof("event")
        if event == "chunk":
            if first is None:
                first = time.perf_counter()
            if response.chunk.discard_previous:
                parts.clear()
            parts.append(response.chunk.text)
        elif event == "sources":
            sources = list(response.sources.sources)
        else:
            summary = response.summary
    ended = time.perf_counter()
    cited = [source.document_id for source in sources if source.cited]
    return AskResult(
        latency_s=ended - started,
        first_chunk_s=(first or ended) - started,
        route=summary.answered_by,
        answer="".join(parts),
        cited_documents=cited,
        cited_any=bool(cited),
        expected=expected,
    )


async def _worker(
    client: pb_grpc.CoordinatorServiceStub,
    queue: asyncio.Queue[tuple[str, str]],
    results: list[AskResult],
    max_tokens: int,
) -> None:
    """Asks the queued questions one after the other until none is left."""
    while not queue.empty():
        question, expected = queue.get_nowait()
        results.append(await _ask(client, question, expected, max_tokens))


async def _info(channel: grpc.aio.Channel) -> llm_pb.InfoResponse:
    return await llm_grpc.LlmServiceStub(channel).Info(llm_pb.InfoRequest(), timeout=30)


def _delta_mean(after: float, n_after: int, before: float, n_before: int) -> float:
    runs = n_after - n_before
    return (after * n_after - before * n_before) / runs if runs > 0 else 0.0


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def run_bench(
    mesh: MeshHandle, rounds: int, levels: list[int], max_tokens: int
) -> dict[str, Any]:
    report: dict[str, Any] = {"load_average_before": os.getloadavg(), "runs": []}
    async with mesh.channel() as channel:
        await _load_documents(channel)
        client = pb_grpc.CoordinatorServiceStub(channel)
        await _ask(client, QUESTIONS[0][0], QUESTIONS[0][1], 8)  # warm up the path
        for concurrency in levels:
            before = await _info(channel)
            work = [q for _ in range(rounds) for q in QUESTIONS]
            queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
            for item in work:
                queue.put_nowait(item)
            results: list[AskResult] = []
            started = time.perf_counter()
            await asyncio.gather(
                *(_worker(client, queue, results, max_tokens) for _ in range(concurrency))
            )
            elapsed = time.perf_counter() - started
            after = await _info(channel)
            latencies = [r.latency_s * 1000 for r in results]
            firsts = [r.first_chunk_s * 1000 for r in results]
            local = [r for r in results if r.route == pb.DECISION_LOCAL]
            report["runs"].append(
                {
                    "concurrency": concurrency,
                    "asks": len(results),
                    "answered_by_local": len(local),
                    "asks_per_s": len(results) / elapsed,
                    "ask_p50_ms": _percentile(latencies, 0.5),
                    "ask_p99_ms": _percentile(latencies, 0.99),
                    "first_chunk_p50_ms": _percentile(firsts, 0.5),
                    "first_chunk_p99_ms": _percentile(firsts, 0.99),
                    "mean_first_chunk_ms": statistics.fmean(firsts),
                    "llm_time_to_first_token_ms": _delta_mean(
                        after.mean_time_to_first_token_ms,
                        after.generations_run,
                        before.mean_time_to_first_token_ms,
                        before.generations_run,
                    ),
                    "llm_tokens_per_s": _delta_mean(
                        after.mean_tokens_per_second,
                        after.generations_run,
                        before.mean_tokens_per_second,
                        before.generations_run,
                    ),
                    "tokens_generated": after.tokens_generated - before.tokens_generated,
                    "share_citing_a_valid_source": sum(r.cited_any for r in results) / len(results),
                    "share_citing_the_expected_document": sum(
                        r.expected in r.cited_documents for r in results
                    )
                    / len(results),
                }
            )
        report["model"] = (await _info(channel)).model
    report["load_average_after"] = os.getloadavg()
    return report


def format_report(report: dict[str, Any]) -> str:
    before = ", ".join(f"{v:.2f}" for v in report["load_average_before"])
    after = ", ".join(f"{v:.2f}" for v in report["load_average_after"])
    lines = [f"model: {report.get('model', '?')}", f"load average before: {before}"]
    header = (
        f"{'conc':>4} {'asks':>5} {'local':>5} {'ask p50':>8} {'ask p99':>8} {'1st p50':>8}"
        f" {'llm ttft':>9} {'tok/s':>6} {'cited':>6} {'expect':>6}"
    )
    lines.append(header)
    for run in report["runs"]:
        lines.append(
            f"{run['concurrency']:>4} {run['asks']:>5} {run['answered_by_local']:>5}"
            f" {run['ask_p50_ms']:>6.0f}ms {run['ask_p99_ms']:>6.0f}ms"
            f" {run['first_chunk_p50_ms']:>6.0f}ms {run['llm_time_to_first_token_ms']:>7.0f}ms"
            f" {run['llm_tokens_per_s']:>6.1f} {run['share_citing_a_valid_source']:>6.0%}"
            f" {run['share_citing_the_expected_document']:>6.0%}"
        )
    lines.append(f"load average after: {after}")
    return "\n".join(lines)
