"""Size limits of ragmeshd's code, checked by `make lint` (`python -m tests.code_size`) and by
the suite: no module over MAX_MODULE_LINES lines and no function over MAX_FUNCTION_LINES,
except the ones listed in ALLOWED with the reason they are still larger."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "services" / "ragmeshd"
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60

# "path" (relative to services/ragmeshd) or "path::function" -> why it is allowed to be larger.
ALLOWED: dict[str, str] = {
    "search/backends/qdrant.py": "one backend's collections, reads and searches against one "
    "client API; its writes are qdrant_writes.py, its point layout qdrant_points.py",
    "search/backends/pgvector.py": "one backend's whole contract; its SQL already lives in "
    "pg_schema, pg_search, pg_keywords and bm25_planner",
    "bench/search.py": "the search bench's three phases (load, warm, measure) share one state",
    "bench/search.py::run_against": "one measured run: phases in order, each a few lines",
    "bench/search.py::run_search_bench": "argument wiring of the bench's options",
    "bench/search_stack.py::search_stack": "starts and stops a stack of processes in order",
    "codegen/apidoc.py::render_file": "one page template, written out in order",
    "commands/serve.py::register": "argument declarations of every `serve` subcommand",
    "embeddings/servicer.py::_embed": "cache lookup, admission and batching of one call",
    "envoy/security.py::admin_on_socket": "one Envoy admin listener definition",
    "evaluation/fusion_study.py::main": "a study script's argument wiring and report",
    "search/bm25_index.py::search": "MaxScore pruning loop, kept whole to match its proof test",
    "search/servicer.py": "one handler per SearchService RPC (thirteen); their checks, uploads, "
    "paging, fusion and storage live in fields, validation, uploads, paging, fusion, backends",
}


def violations(package: Path = PACKAGE) -> list[str]:
    """Every module and function over its limit that ALLOWED does not explain."""
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        source = path.read_text()
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES and relative not in ALLOWED:
            found.append(f"{relative}: {lines} lines (limit {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                key = f"{relative}::{node.name}"
                if length > MAX_FUNCTION_LINES and key not in ALLOWED:
                    found.append(f"{key}: {length} lines (limit {MAX_FUNCTION_LINES})")
    return found


if __name__ == "__main__":
    problems = violations()
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)
