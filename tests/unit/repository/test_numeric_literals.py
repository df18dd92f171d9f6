"""Every tunable number lives in `ragmeshd/defaults.py` or next to its single use with the
reason (issue 18): the numeric literals anywhere else in services/ragmeshd are either allowed by
a rule below (structural numbers, unit conversions, a named constant with its reason in a
comment) or listed in ALLOWED with a reason of their own."""

from __future__ import annotations

import ast
import functools
import re

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "services" / "ragmeshd"

# Whole modules (or folders) whose numbers are not limits of the running mesh.
ALLOWED_MODULES = {
    "defaults.py": "the home of every tunable's default",
    "envoy/limits.py": "every Envoy number in one module (issue 18 item 2), each with its reason",
    "runtime/metrics.py": "histogram bucket boundaries: how metrics are binned, not limits",
    "settings/profiles.py": "named profiles: each value is a default of the profile it names",
    "bench/": "benchmark clients: each run's workload, printed with its report; never in a server",
    "evaluation/": "offline evaluation: grids, folds and seeds of a study; never in a server",
    "codegen/": "build-time generators of docs and schemas; never in a server",
    "commands/bench.py": "CLI defaults of `ragmesh bench`, shown in its --help",
    "commands/bench_search.py": "CLI defaults of `ragmesh bench search`, shown in its --help",
    "commands/profile.py": "the fixed workload of `ragmesh profile`, shown in its --help",
}

# Numbers that are structure or units, never a tunable.
STRUCTURAL = {0, 1, -1, 2, 3600, 86400, 60, 1000, 1024, 1e6, 1e9, 1e-3, 1e-6, 1e-9}
# Protocol facts: TCP ports are 1-65535; Timestamp.nanos is at most 999,999,999.
PROTOCOL = {65536, 999_999_999}
# Modules that speak HTTP, where 100-599 are status codes.
HTTP_MODULES = (
    "openai_compat/",
    "envoy/admin.py",
    "envoy/security.py",
    "supervisor/http_adapter.py",
)
# A setting's validation bounds: what a configuration may say, not what it does.
BOUND_KEYWORDS = {"ge", "gt", "le", "lt"}

# Literals outside every rule: (module, the literal as written) -> why it is not a tunable or
# why it stays next to its single use.
ALLOWED: dict[tuple[str, str], str] = {
    ("search/backends/qdrant_edge.py", "16"): "Qdrant's own HNSW m default when a config has none",
    ("search/backends/qdrant_edge.py", "100"): "Qdrant's own ef_construct default",
    ("search/backends/qdrant_edge.py", "10000"): "Qdrant's own full_scan_threshold default",
    ("search/backends/qdrant_edge.py", "10"): "qdrant-client's default limit, kept for parity",
    ("commands/background.py", "20"): "log lines shown when a background start fails",
    (
        "commands/config.py",
        "3",
    ): "a dotted key's depth (section.field.sub); three tries of a read",
    ("commands/convention.py", "3"): "the CLI's exit status for an unreachable mesh (docs/cli.md)",
    ("commands/search.py", "10"): "--top-k's default, shown in its --help",
    ("commands/search.py", "100"): "--top-k's bound, shown in its --help",
    ("commands/search.py", "400"): "characters of a hit's text printed per line of output",
    ("documents/html.py", "3"): "heading levels h3..h6: HTML structure",
    ("documents/html.py", "4"): "heading levels h3..h6: HTML structure",
    ("documents/html.py", "5"): "heading levels h3..h6: HTML structure",
    ("documents/html.py", "6"): "heading levels h3..h6: HTML structure",
    ("documents/rst.py", "3"): "reStructuredText syntax: a directive marker's length",
    ("documents/rst.py", "4"): "reStructuredText syntax: a transition is at least 4 characters",
    ("embeddings/runtime_choice.py", "5"): "the fixed probe texts that compare two runtimes",
    ("embeddings/runtime_choice.py", "8"): "the fixed probe texts that compare two runtimes",
    ("embeddings/runtime_choice.py", "20"): "the fixed probe texts that compare two runtimes",
    ("embeddings/runtime_choice.py", "32"): "the fixed probe texts that compare two runtimes",
    ("embeddings/runtime_choice.py", "53"): "the fixed probe texts that compare two runtimes",
    ("embeddings/runtimes.py", "17"): "the ONNX opset the export targets, a format version",
    ("embeddings/servicer.py", "0.1"): "the least retry-after hint sent, so a client never spins",
    ("envoy/config.py", "100"): "YAML line width and a ratio shown as a percentage",
    ("envoy/kubernetes.py", "100"): "YAML line width of the rendered file",
    ("envoy/topology.py", "8444"): "the internal listener's well-known port (docs/architecture.md)",
    ("envoy/topology.py", "9901"): "Envoy's conventional admin port",
    ("ingest/patterns.py", "3"): "glob syntax: the length of '**/'",
    ("ingest/patterns.py", "92"): "chr(92), the backslash",
    ("ingest/sync.py", "64"): "a sync's batch defaults, overridden by the CLI's flags",
    ("ingest/sync.py", "512"): "a sync's batch defaults, overridden by the CLI's flags",
    (
        "llm/engine.py",
        "512",
    ): "the engine's own default; the server passes its setting",
    ("llm/engine.py", "64"): "the smallest context a prompt and an answer fit in",
    ("pki/authority.py", "3650"): "the CA's ten-year validity, named beside its use",
    ("pki/crl.py", "365"): "a CRL's validity, named beside its use",
    ("pki/crl.py", "30"): "CRL refresh margin, named beside its use",
    ("pki/passphrase.py", "32"): "bytes of randomness in a generated passphrase (256 bits)",
    ("postgres/embedded.py", "128"): "the shell's 128+signal exit status convention",
    ("postgres/pool.py", "10.0"): "connect timeout of a pool, named beside its use",
    ("runtime/error_interceptor.py", "40"): "room for the '(cut from N characters)' suffix",
    ("runtime/keystore.py", "6"): "bytes of a key id (48 bits, unique within a key store)",
    ("runtime/keystore.py", "32"): "bytes of randomness in a secret (256 bits)",
    ("runtime/rls_messages.py", "3"): "protobuf field numbers of Envoy's rate-limit messages",
    ("runtime/rls_messages.py", "4"): "protobuf field numbers of Envoy's rate-limit messages",
    ("runtime/tls_reload.py", "0.02"): "a file watcher's settle pause before re-reading a rename",
    ("search/backends/pg_connection.py", "4"): "pgvector's binary header: two int16 fields",
    ("search/backends/pg_keyword_index.py", "64"): "trim the delta log every 64th write",
    ("search/bm25_index.py", "8"): "cost ratio of a posting walk to a slot scan (algorithm)",
    ("search/fusion.py", "0.5"): "min-max of equal scores: the midpoint (the algorithm)",
    ("search/fusion.py", "3"): "DBSF's mean +/- 3 standard deviations (the algorithm)",
    ("search/fusion.py", "6"): "DBSF's mean +/- 3 standard deviations (the algorithm)",
    ("search/keywords.py", "0.5"): "BM25's IDF smoothing (the formula)",
    ("search/keywords.py", "4"): "bytes of a term hash (a 32-bit id)",
    ("search/paging.py", "4"): "base64 padding to a multiple of 4",
    ("search/validation.py", "100.0"): "the largest RRF weight accepted, an API bound",
    ("search/validation.py", "100"): "HNSW m's accepted range, an API bound",
    ("search/validation.py", "4"): "HNSW ef_construction's accepted range, an API bound",
    ("settings/mesh.py", "64"): "the smallest log rotation size accepted (64 KiB)",
    ("supervisor/plan.py", "16"): "the most replicas a plan accepts, a validation bound",
    ("supervisor/processes.py", "10"): "a monitor's tick count between checks",
    ("supervisor/prometheus.py", "5"): "Prometheus scrape interval, named beside its use",
}


def _is_named_with_reason(node: ast.AST, parents: dict[ast.AST, ast.AST], lines: list[str]) -> bool:
    """Part of `NAME = ...` (upper case, outside functions) with a comment saying why: on its
    lines or heading its block of constants."""
    while node in parents and not isinstance(node, ast.Assign | ast.AnnAssign):
        node = parents[node]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return False
    if not isinstance(node, ast.Assign | ast.AnnAssign):
        return False
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    if not all(isinstance(t, ast.Name) and t.id.lstrip("_").isupper() for t in targets):
        return False
    if any("#" in line for line in lines[node.lineno - 1 : node.end_lineno]):
        return True
    # The comment may head a block of constants: walk up to the first blank line.
    index = node.lineno - 2
    while index >= 0 and lines[index].strip():
        if lines[index].lstrip().startswith("#"):
            return True
        index -= 1
    return False


def _allowed_by_rule(
    module: str, node: ast.Constant, parents: dict[ast.AST, ast.AST], lines: list[str], text: str
) -> bool:
    value = node.value
    parent = parents.get(node)
    if isinstance(parent, ast.UnaryOp):
        parent = parents.get(parent)
    if value in STRUCTURAL or value in PROTOCOL or text.lower().startswith("0o"):
        return True
    if isinstance(parent, ast.Subscript | ast.Slice):  # an index or a slice bound
        return True
    if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Pow | ast.LShift):
        return True  # 2**20, 1 << 20: units
    if isinstance(parent, ast.Call) and getattr(parent.func, "id", "") == "round":
        return True  # digits shown
    if isinstance(parent, ast.keyword) and parent.arg in BOUND_KEYWORDS:
        return True
    if module.startswith(HTTP_MODULES) and isinstance(value, int) and 100 <= value <= 599:
        return True
    return _is_named_with_reason(node, parents, lines)


@functools.cache
def literals() -> tuple[tuple[str, str, int], ...]:
    """Every numeric literal outside the rules: (module, literal as written, line). Computed
    once for the tests below (get_source_segment rescans its module for every literal)."""
    found: list[tuple[str, str, int]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module.startswith(tuple(ALLOWED_MODULES)):
            continue
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or type(node.value) not in (int, float):
                continue
            text = ast.get_source_segment(source, node) or repr(node.value)
            if not _allowed_by_rule(module, node, parents, lines, text):
                found.append((module, text, node.lineno))
    return tuple(found)


def test_every_numeric_literal_is_a_default_a_named_reason_or_allowed() -> None:
    unexplained = sorted(
        f"{module}:{line}: {text}"
        for module, text, line in literals()
        if (module, text) not in ALLOWED
    )
    assert unexplained == [], (
        "move these into ragmeshd/defaults.py, name them with a comment saying why, or add "
        "them to ALLOWED with a reason:\n" + "\n".join(unexplained)
    )


def test_every_allowance_still_applies() -> None:
    present = {(module, text) for module, text, _ in literals()}
    stale = sorted(f"{module}: {text}" for module, text in ALLOWED if (module, text) not in present)
    assert stale == [], f"no longer needed, remove from ALLOWED: {stale}"
    for prefix in ALLOWED_MODULES:
        assert (PACKAGE / prefix).exists(), f"{prefix} no longer exists"


def test_every_reason_is_a_sentence() -> None:
    for reason in [*ALLOWED.values(), *ALLOWED_MODULES.values()]:
        assert re.search(r"\w{3,} \w{2,}", reason), reason
