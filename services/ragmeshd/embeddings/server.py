"""Wiring of the embeddings server process."""

from __future__ import annotations

from ragmesh.embeddings.v1 import embeddings_service_pb2 as pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc
from ragmeshd.embeddings.batcher import DynamicBatcher
from ragmeshd.embeddings.keeper import ModelKeeper
from ragmeshd.embeddings.model import EncodedText
from ragmeshd.embeddings.servicer import EmbeddingsServicer
from ragmeshd.embeddings.worker import load_encoder
from ragmeshd.runtime.server import service_server
from ragmeshd.runtime.work_meter import work_meter_for
from ragmeshd.settings import Settings

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EmbeddingsService"].full_name


async def serve_embeddings(settings: Settings) -> int:
    """Run the embeddings server until SIGTERM/SIGINT; returns the exit code."""
    config = settings.embeddings
    server = service_server(settings, "embeddings", health_names=[SERVICE_NAME])
    servicer = EmbeddingsServicer(config, settings.server)
    servicer.meter = work_meter_for(settings, "embeddings")
    pb_grpc.add_EmbeddingsServiceServicer_to_server(servicer, server.grpc)
    await server.start()

    async def load_model() -> None:
        keeper = ModelKeeper(
            lambda: load_encoder(
                config.model_path,
                config.device,
                config.slice_overhead_tokens,
                attempts=config.model_load_attempts,
                backoff_base_s=config.model_load_backoff_base_s,
                runtime=config.runtime,
                runtime_cache_dir=str(settings.models_dir),
                cpu_threads=config.cpu_threads,
            ),
            set_serving=server.set_serving,
            # A replacement ends when the new process serves; it must not fail.
            watch=lambda task, what: server.watch(task, what, may_finish=True),
        )
        await keeper.start()
        batcher: DynamicBatcher[EncodedText] = DynamicBatcher(
            keeper.encode,
            max_batch_texts=config.max_batch_texts,
            max_batch_delay_s=config.max_batch_delay_ms / 1000,
            max_queue_texts=config.max_queue_texts,
            batch_timeout_s=config.model_batch_timeout_s,
            on_batch_timeout=keeper.on_batch_timeout,
            bulk_batch_chars=config.bulk_batch_chars,
        )
        keeper.on_lost = batcher.fail_queued
        server.watch(batcher.start(), "batcher")

        async def stop_model() -> None:
            await batcher.close()  # finish the queued work first
            await keeper.close()
            await servicer.cache.close()

        server.on_stopped(stop_model)
        servicer.attach(keeper, batcher)

    return await server.run(load_model())
