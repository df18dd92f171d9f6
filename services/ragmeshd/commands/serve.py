"""`ragmesh serve SERVICE`: run one server process in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

from ragmeshd.commands.convention import read_secret_file
from ragmeshd.runtime.logs import configure_logging
from ragmeshd.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run one ragmesh server in the foreground")
    services = serve.add_subparsers(dest="service", required=True, metavar="SERVICE")

    embeddings = services.add_parser(
        "embeddings",
        help="the embeddings server (sentence-transformers with dynamic batching)",
        description="Serve ragmesh.embeddings.v1.EmbeddingsService. Unset flags fall back to"
        " RAGMESH_EMBEDDINGS__* variables, the config file, then the defaults.",
    )
    embeddings.add_argument("--listen", help="host:port or unix:PATH (default 127.0.0.1:50051)")
    embeddings.add_argument("--model-path", help="a local sentence-transformers model directory")
    embeddings.add_argument("--device", choices=["auto", "cpu", "cuda"])
    embeddings.add_argument(
        "--runtime",
        choices=["auto", "torch", "onnx", "openvino"],
        help="where the model runs (auto: the fastest one matching torch on this machine)",
    )
    embeddings.add_argument("--max-batch-texts", type=int, help="texts per model batch")
    embeddings.add_argument("--max-batch-delay-ms", type=float, help="longest wait to fill a batch")
    embeddings.add_argument("--max-queue-texts", type=int, help="queued texts before refusing")
    embeddings.add_argument(
        "--slice-overhead-tokens",
        type=float,
        help="cost of one forward pass in tokens, for cutting batches into slices",
    )
    embeddings.set_defaults(handler=_serve_embeddings)

    coordinator = services.add_parser(
        "coordinator",
        help="the coordinator server (context augmentation, local/remote LLM routing)",
        description="Serve ragmesh.coordinator.v1.CoordinatorService. Unset flags fall back to"
        " RAGMESH_COORDINATOR__* variables, the config file, then the defaults. Interactions"
        " are stored in the search service's PostgreSQL (the embedded one unless a DSN is"
        " set). A backend is an OpenAI-compatible API base URL (e.g. http://127.0.0.1:8080/v1);"
        " without any, answers are the retrieved context with a note.",
    )
    coordinator.add_argument("--listen", help="host:port or unix:PATH (default 127.0.0.1:50053)")
    coordinator.add_argument("--search-target", help="host:port of the search service or Envoy")
    coordinator.add_argument(
        "--llm-target", help="host:port of the llm service or Envoy (the LOCAL backend)"
    )
    coordinator.add_argument("--local-url", help="base URL of the local chat-completions API")
    coordinator.add_argument("--local-model", help="model name sent to the local backend")
    coordinator.add_argument("--local-api-key-file", help="file holding the local API key")
    coordinator.add_argument("--remote-url", help="base URL of the remote chat-completions API")
    coordinator.add_argument("--remote-model", help="model name sent to the remote backend")
    coordinator.add_argument("--remote-api-key-file", help="file holding the remote API key")
    coordinator.add_argument(
        "--confidence-threshold",
        type=float,
        help="best dense similarity at which the local backend answers (default 0.7; set"
        " in the config file instead, it is re-read while the server runs)",
    )
    coordinator.add_argument(
        "--pg-dsn-file",
        type=Path,
        metavar="FILE",
        help="a file holding the DSN of an external PostgreSQL (default: search's)",
    )
    coordinator.set_defaults(handler=_serve_coordinator)

    search = services.add_parser(
        "search",
        help="the search server (documents in PostgreSQL + pgvector or Qdrant)",
        description="Serve ragmesh.search.v1.SearchService. Unset flags fall back to"
        " RAGMESH_SEARCH__* variables, the config file, then the defaults. With the pgvector"
        " backend and no --pg-dsn-file it uses the embedded PostgreSQL (`ragmesh serve postgres`).",
    )
    search.add_argument("--listen", help="host:port or unix:PATH (default 127.0.0.1:50052)")
    search.add_argument("--backend", choices=["pgvector", "qdrant"], help="the document store")
    search.add_argument("--embeddings-target", help="host:port of the embeddings service or Envoy")
    search.add_argument(
        "--pg-dsn-file",
        type=Path,
        metavar="FILE",
        help="a file holding the libpq URI of an external PostgreSQL with pgvector",
    )
    search.add_argument(
        "--qdrant-location",
        help="a Qdrant server's http(s):// URL; edge:DIR (Qdrant's engine in-process, by default "
        "in STATE_DIR/qdrant-edge); :memory: or a directory (qdrant-client's local mode)",
    )
    search.add_argument("--hnsw-ef-search", type=int, help="HNSW candidate list size at query time")
    search.set_defaults(handler=_serve_search)

    openai = services.add_parser(
        "openai",
        help="the OpenAI-compatible HTTP adapter (/v1/embeddings, /v1/models, chat)",
        description="Serve /v1/embeddings, /v1/models and /v1/chat/completions over HTTP,"
        " backed by the embeddings service and the coordinator's Ask. Unset flags fall back to"
        " RAGMESH_OPENAI__* variables, the config file, then the defaults.",
    )
    openai.add_argument("--listen", help="host:port (default 127.0.0.1:50054)")
    openai.add_argument("--embeddings-target", help="host:port of the embeddings service or Envoy")
    openai.add_argument("--coordinator-target", help="host:port of the coordinator or Envoy")
    openai.set_defaults(handler=_serve_openai)

    llm = services.add_parser(
        "llm",
        help="the language-model server (llama.cpp; SmolLM2-135M-Instruct by default)",
        description="Serve ragmesh.llm.v1.LlmService: chat generation with a .gguf model, one"
        " request at a time behind a bounded queue. NOT_SERVING until the model has loaded"
        " and a warm-up generation passed. Unset flags fall back to RAGMESH_LLM__* variables,"
        " the config file, then the defaults.",
    )
    llm.add_argument("--listen", help="host:port or unix:PATH (default 127.0.0.1:50055)")
    llm.add_argument(
        "--model-path", help="a .gguf model file (default: the packaged SmolLM2-135M-Instruct)"
    )
    llm.add_argument(
        "--context-window-tokens", type=int, help="prompt and reply together (default 4096)"
    )
    llm.add_argument("--threads", type=int, help="CPU threads generating (0: every CPU)")
    llm.add_argument(
        "--max-waiting", type=int, help="requests that may wait for the model (default 8)"
    )
    llm.set_defaults(handler=_serve_llm)

    postgres = services.add_parser(
        "postgres",
        help="the embedded PostgreSQL + pgvector (unix socket under STATE_DIR/postgres)",
        description="Initialise STATE_DIR/postgres on first use, then run PostgreSQL in the"
        " foreground on a unix socket only. SIGTERM/SIGINT stop it with a fast shutdown.",
    )
    postgres.set_defaults(handler=_serve_postgres)

    ratelimit = services.add_parser(
        "ratelimit",
        help="Envoy's rate-limit service: per-key limits for the whole mesh",
        description="Serve envoy.service.ratelimit.v3.RateLimitService on the unix socket"
        " STATE_DIR/run/ratelimit.sock; Envoy asks it about every call whose API key may"
        " carry a limit and refuses calls of a key over its `ragmesh keys create --rate` limit.",
    )
    ratelimit.set_defaults(handler=_serve_ratelimit)


def _section_overrides(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The flags the user actually gave, keyed by setting name."""
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    # A DSN may hold a password: only from a file (docs/cli.md).
    if getattr(args, "pg_dsn_file", None) is not None:
        overrides["pg_dsn"] = read_secret_file(args.pg_dsn_file, "a PostgreSQL DSN")
    return overrides


def _serve_embeddings(args: argparse.Namespace) -> int:
    from ragmeshd.embeddings.server import serve_embeddings

    overrides = _section_overrides(
        args,
        [
            "listen",
            "model_path",
            "device",
            "runtime",
            "max_batch_texts",
            "max_batch_delay_ms",
            "max_queue_texts",
            "slice_overhead_tokens",
        ],
    )
    settings = load_settings(embeddings=overrides)
    configure_logging("embeddings", settings.log_level, settings.state_dir)
    return asyncio.run(serve_embeddings(settings))


def _serve_coordinator(args: argparse.Namespace) -> int:
    from ragmeshd.coordinator.server import serve_coordinator

    overrides = _section_overrides(
        args,
        [
            "listen",
            "search_target",
            "llm_target",
            "local_url",
            "local_model",
            "local_api_key_file",
            "remote_url",
            "remote_model",
            "remote_api_key_file",
            "confidence_threshold",
        ],
    )
    settings = load_settings(coordinator=overrides)
    configure_logging("coordinator", settings.log_level, settings.state_dir)
    return asyncio.run(
        serve_coordinator(settings, reload_settings=lambda: load_settings(coordinator=overrides))
    )


def _serve_search(args: argparse.Namespace) -> int:
    from ragmeshd.search.server import serve_search

    overrides = _section_overrides(
        args,
        ["listen", "backend", "embeddings_target", "qdrant_location", "hnsw_ef_search"],
    )
    settings = load_settings(search=overrides)
    configure_logging("search", settings.log_level, settings.state_dir)
    return asyncio.run(serve_search(settings))


def _serve_openai(args: argparse.Namespace) -> int:
    from ragmeshd.openai_compat.server import serve_openai

    overrides = _section_overrides(args, ["listen", "embeddings_target", "coordinator_target"])
    settings = load_settings(openai=overrides)
    configure_logging("openai", settings.log_level, settings.state_dir)
    return asyncio.run(serve_openai(settings))


def _serve_llm(args: argparse.Namespace) -> int:
    from ragmeshd.llm.server import serve_llm

    overrides = _section_overrides(
        args, ["listen", "model_path", "context_window_tokens", "threads", "max_waiting"]
    )
    settings = load_settings(llm=overrides)
    configure_logging("llm", settings.log_level, settings.state_dir)
    return asyncio.run(serve_llm(settings))


def _serve_postgres(args: argparse.Namespace) -> int:
    from ragmeshd.postgres.embedded import EmbeddedPostgres, EmbeddedPostgresError

    settings = load_settings()
    configure_logging("postgres", settings.log_level, settings.state_dir)
    try:
        return EmbeddedPostgres(settings.state_dir).run()
    except EmbeddedPostgresError as exc:
        logging.getLogger("ragmesh.postgres").error("%s", exc)
        return 1


def _serve_ratelimit(args: argparse.Namespace) -> int:
    from ragmeshd.ratelimit.server import serve_ratelimit

    settings = load_settings()
    configure_logging("ratelimit", settings.log_level, settings.state_dir)
    return asyncio.run(serve_ratelimit(settings))
