"""Wiring of the search server process."""

from __future__ import annotations

import asyncio
import logging

from ragmesh.search.v1 import search_service_pb2 as pb
from ragmesh.search.v1 import search_service_pb2_grpc as pb_grpc
from ragmeshd.postgres.embedded import EmbeddedPostgres
from ragmeshd.postgres.pool import drop_open_connections
from ragmeshd.runtime.channels import outgoing_interceptors
from ragmeshd.runtime.server import service_server
from ragmeshd.runtime.tls import caller_credentials_for
from ragmeshd.runtime.tracing import client_interceptors
from ragmeshd.runtime.work_meter import work_meter_for
from ragmeshd.search.backends.base import SearchBackend
from ragmeshd.search.chunking import make_splitter
from ragmeshd.search.embedder import Embedder
from ragmeshd.search.health import store_monitor
from ragmeshd.search.result_cache import ResultCache
from ragmeshd.search.servicer import SearchServicer
from ragmeshd.settings import Settings
from ragmeshd.state import MeshLayout

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SearchService"].full_name

_log = logging.getLogger("ragmesh.search")


def pg_dsn(settings: Settings) -> str:
    """The external server's DSN if set, else the embedded server's unix socket."""
    return settings.search.pg.dsn or EmbeddedPostgres(settings.state_dir).dsn()


def qdrant_location(settings: Settings) -> str:
    """search.qdrant_location if set, else Qdrant's own engine in-process under the state
    folder (qdrant-edge-py)."""
    default = f"edge:{MeshLayout(settings.state_dir).qdrant_edge_dir}"
    return settings.search.qdrant_location or default


def make_backend(settings: Settings) -> SearchBackend:
    if settings.search.backend == "qdrant":
        from ragmeshd.search.backends.qdrant import QdrantBackend

        return QdrantBackend(settings.search, qdrant_location(settings))
    from ragmeshd.search.backends.pgvector import PgVectorBackend

    return PgVectorBackend(pg_dsn(settings), settings.search)


async def serve_search(settings: Settings) -> int:
    """Run the search server until SIGTERM/SIGINT; returns the exit code."""
    config = settings.search
    server = service_server(settings, "search", health_names=[SERVICE_NAME])
    backend = make_backend(settings)
    embedder = Embedder(
        config.embeddings_target,
        config,
        credentials=caller_credentials_for(settings, "search"),
        channel_options=[("grpc.max_receive_message_length", settings.server.max_message_bytes)],
        interceptors=[*client_interceptors(), *outgoing_interceptors(settings, "search")],
    )
    results = ResultCache(
        pg_dsn(settings) if config.backend == "pgvector" else None,
        max_bytes=config.result_cache_max_bytes,
        ttl_s=config.result_cache_ttl_s,
        transaction_pooling=config.pg.transaction_pooling,
    )
    servicer = SearchServicer(config, settings.server, backend, embedder, results)
    servicer.meter = work_meter_for(settings, "search")
    pb_grpc.add_SearchServiceServicer_to_server(servicer, server.grpc)

    def record_outage(since: float | None) -> None:
        servicer.store_down_since = since
        if since is not None:
            # Queries already waiting on a frozen database fail now with UNAVAILABLE instead
            # of at their callers' deadline (ragmeshd/postgres/pool.py).
            drop_open_connections()

    monitor = store_monitor(
        backend,
        interval_s=config.pg.health_interval_s,
        set_serving=server.set_serving,
        on_change=record_outage,
    )

    async def stop_dependencies() -> None:
        await monitor.stop()
        await embedder.close()
        await backend.close()
        await results.close()

    server.on_stopped(stop_dependencies)
    await server.start()

    async def connect() -> None:
        _log.info("connecting the store", extra={"backend": backend.name})
        await backend.start()
        await results.start()  # after the backend's migrations made its table
        servicer.attach(await asyncio.to_thread(make_splitter, settings))
        server.watch(monitor.start(), "store monitor")

    return await server.run(connect())
