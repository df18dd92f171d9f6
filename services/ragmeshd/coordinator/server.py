"""Wiring of the coordinator server process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from ragmesh.coordinator.v1 import coordinator_service_pb2 as pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as pb_grpc
from ragmeshd.coordinator import migrate
from ragmeshd.coordinator.answering import BackendSlot, HealthProbe
from ragmeshd.coordinator.augment import Augmenter
from ragmeshd.coordinator.budget import HuggingFaceTokenCounter
from ragmeshd.coordinator.feedback import InteractionsCollection
from ragmeshd.coordinator.health import database_monitor
from ragmeshd.coordinator.llm_backend import (
    AnswerBackend,
    BackendConfig,
    ChatBackend,
    read_api_key,
)
from ragmeshd.coordinator.llm_service_backend import LlmServiceBackend
from ragmeshd.coordinator.routing import Side
from ragmeshd.coordinator.search_client import SearchClient
from ragmeshd.coordinator.servicer import CoordinatorServicer, Dependencies
from ragmeshd.coordinator.store import APPLICATION_NAME, InteractionStore
from ragmeshd.coordinator.threshold import LiveThreshold
from ragmeshd.models import packaged_model_path
from ragmeshd.postgres.database import PoolSpec, open_database
from ragmeshd.postgres.embedded import EmbeddedPostgres
from ragmeshd.postgres.pool import DatabaseConnectError
from ragmeshd.runtime.channels import outgoing_interceptors
from ragmeshd.runtime.resilience import CircuitBreaker
from ragmeshd.runtime.server import StartupError, service_server
from ragmeshd.runtime.tls import caller_credentials_for
from ragmeshd.runtime.tracing import client_interceptors
from ragmeshd.runtime.work_meter import work_meter_for
from ragmeshd.settings import CoordinatorSettings, PostgresSettings, Settings, config_file_path

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CoordinatorService"].full_name

_log = logging.getLogger("ragmesh.coordinator")


def pg_dsn(settings: Settings) -> str:
    """The coordinator's database: its own DSN, else search's, else the embedded server."""
    return pg_address(settings).dsn or EmbeddedPostgres(settings.state_dir).dsn()


def pg_address(settings: Settings) -> PostgresSettings:
    """The coordinator's database settings, with how to reach it (dsn, migrate_dsn,
    transaction_pooling) taken from search's when the coordinator names no DSN of its own:
    the same server, through the same pooler or none."""
    own = settings.coordinator.pg
    if own.dsn:
        return own
    shared = settings.search.pg
    return own.model_copy(
        update={
            "dsn": shared.dsn,
            "migrate_dsn": shared.migrate_dsn,
            "transaction_pooling": shared.transaction_pooling,
        }
    )


def make_slots(
    config: CoordinatorSettings, local_backend: AnswerBackend | None = None
) -> dict[Side, BackendSlot]:
    """The configured backends, each with its breaker and cached health probe;
    `local_backend` (the llm service) takes the LOCAL side's place when given."""
    sides = {
        Side.LOCAL: (config.local_url, config.local_model, config.local_api_key_file),
        Side.REMOTE: (config.remote_url, config.remote_model, config.remote_api_key_file),
    }
    breakers = {Side.LOCAL: config.local_breaker, Side.REMOTE: config.remote_breaker}
    slots = {}
    for side, (url, model, key_file) in sides.items():
        backend: AnswerBackend
        if side is Side.LOCAL and local_backend is not None:
            backend = local_backend
        elif not url:
            continue
        else:
            try:
                api_key = read_api_key(key_file)
            except (OSError, ValueError) as exc:
                raise StartupError(f"the {side.value} backend's API key: {exc}") from exc
            backend = _chat_backend(config, side, url, model, api_key)
        slots[side] = BackendSlot(
            side,
            backend,
            CircuitBreaker(
                f"{side.value}-llm",
                failure_threshold=breakers[side].failures,
                recovery_s=breakers[side].recovery_s,
            ),
            HealthProbe(backend, cache_s=config.health_cache_s, timeout_s=config.health_timeout_s),
        )
    return slots


def _backend_config(config: CoordinatorSettings, side: Side, url: str, model: str) -> BackendConfig:
    return BackendConfig(
        name=side.value,
        base_url=url,
        model=model,
        api_key=None,
        connect_timeout_s=config.backend_connect_timeout_s,
        idle_timeout_s=config.backend_idle_timeout_s,
        deadline_s=config.backend_deadline_s,
        temperature=config.answer_temperature,
    )


def llm_service_backend(settings: Settings) -> LlmServiceBackend | None:
    """The llm service as the LOCAL backend, when coordinator.llm_target names it."""
    config = settings.coordinator
    if not config.llm_target:
        return None
    return LlmServiceBackend(
        _backend_config(config, Side.LOCAL, config.llm_target, config.local_model),
        credentials=caller_credentials_for(settings, "coordinator"),
        channel_options=[("grpc.max_receive_message_length", settings.server.max_message_bytes)],
        interceptors=[*client_interceptors(), *outgoing_interceptors(settings, "coordinator")],
    )


def _chat_backend(
    config: CoordinatorSettings, side: Side, url: str, model: str, api_key: str | None
) -> ChatBackend:
    return ChatBackend(
        BackendConfig(
            name=side.value,
            base_url=url,
            model=model,
            api_key=api_key,
            connect_timeout_s=config.backend_connect_timeout_s,
            idle_timeout_s=config.backend_idle_timeout_s,
            deadline_s=config.backend_deadline_s,
            temperature=config.answer_temperature,
        )
    )


def search_client(settings: Settings) -> SearchClient:
    """The coordinator's client of the search service, with its breaker."""
    config = settings.coordinator
    return SearchClient(
        config.search_target,
        timeout_s=config.search_timeout_s,
        breaker=CircuitBreaker(
            "search",
            failure_threshold=config.search_breaker.failures,
            recovery_s=config.search_breaker.recovery_s,
        ),
        credentials=caller_credentials_for(settings, "coordinator"),
        channel_options=[("grpc.max_receive_message_length", settings.server.max_message_bytes)],
        interceptors=[*client_interceptors(), *outgoing_interceptors(settings, "coordinator")],
    )


async def open_store(settings: Settings) -> InteractionStore:
    """The interactions store: connect, migrate, pool (StartupError when unreachable)."""
    config = settings.coordinator
    try:
        pool = await open_database(
            pg_dsn(settings),
            migrate.MIGRATIONS,
            PoolSpec(
                application_name=APPLICATION_NAME,
                min_size=config.pg.pool_min_size,
                max_size=config.pg.pool_max_size,
                statement_timeout_ms=config.pg.statement_timeout_ms,
                transaction_pooling=pg_address(settings).transaction_pooling,
            ),
            connect_attempts=config.pg.connect_attempts,
            connect_backoff_base_s=config.pg.connect_backoff_base_s,
            migrate_dsn=pg_address(settings).migrate_dsn,
        )
    except DatabaseConnectError as exc:
        raise StartupError(str(exc)) from exc
    return InteractionStore(pool, export_page_size=config.export_page_size)


async def token_counter(settings: Settings) -> HuggingFaceTokenCounter:
    """Counts context tokens with the embedding model's tokenizer (see tokenizer_path)."""
    tokenizer_dir = settings.coordinator.tokenizer_path or settings.embeddings.model_path
    model_dir = Path(tokenizer_dir) if tokenizer_dir else packaged_model_path()
    return await asyncio.to_thread(HuggingFaceTokenCounter.from_model_dir, model_dir)


def live_threshold(settings: Settings, reload: Callable[[], Settings]) -> LiveThreshold:
    """The confidence threshold, re-read through `reload` when the config file changes."""
    config = settings.coordinator
    return LiveThreshold(
        config.confidence_threshold,
        config_file=config_file_path(),
        load=lambda: reload().coordinator.confidence_threshold,
        check_interval_s=config.config_check_interval_s,
    )


class _Stack:
    """What the server holds besides gRPC: closed in reverse order of opening when it stops."""

    def __init__(self) -> None:
        self._closers: list[Callable[[], object]] = []

    def add(self, close: Callable[[], object]) -> None:
        self._closers.append(close)

    async def close(self) -> None:
        for close in reversed(self._closers):
            result = close()
            if asyncio.iscoroutine(result):
                await result


async def serve_coordinator(
    settings: Settings, reload_settings: Callable[[], Settings] | None = None
) -> int:
    """Run the coordinator server until SIGTERM/SIGINT; returns the exit code.
    `reload_settings` rebuilds the settings as at start-up (the CLI's flags included); the
    confidence threshold is re-read through it when the config file changes."""
    config = settings.coordinator
    server = service_server(settings, "coordinator", health_names=[SERVICE_NAME])
    servicer = CoordinatorServicer(config, settings.server)
    servicer.meter = work_meter_for(settings, "coordinator")
    pb_grpc.add_CoordinatorServiceServicer_to_server(servicer, server.grpc)
    try:
        slots = make_slots(config, llm_service_backend(settings))
    except StartupError as exc:
        _log.error("start-up failed: %s", exc)
        return 1
    search = search_client(settings)
    threshold = live_threshold(settings, reload_settings or (lambda: settings))
    opened = _Stack()
    for slot in slots.values():
        opened.add(slot.backend.aclose)
    opened.add(search.close)
    server.on_stopped(opened.close)
    await server.start()

    async def connect() -> None:
        store = await open_store(settings)
        opened.add(store.close)
        servicer.attach(
            Dependencies(
                store=store,
                augmenter=Augmenter(search, await token_counter(settings), config),
                interactions=InteractionsCollection(
                    search,
                    config.interactions_collection,
                    max_chars=config.interaction_document_max_chars,
                ),
                slots=slots,
                threshold=threshold,
            )
        )
        monitor = database_monitor(
            store,
            interval_s=config.pg.health_interval_s,
            timeout_s=config.pg.health_timeout_s,
            set_serving=server.set_serving,
        )
        server.watch(monitor.start(), "database monitor")
        opened.add(monitor.stop)
        _log.info(
            "coordinator ready",
            extra={
                "backends": sorted(side.value for side in slots),
                **config.model_dump(
                    include={"llm_target", "search_target", "confidence_threshold"}
                ),
            },
        )

    return await server.run(connect())
