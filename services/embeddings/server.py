"""Wiring of the embeddings server process."""

from __future__ import annotations

import asyncio

from ragmesh.embeddings.v1 import embeddings_service_pb2 as pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc
from services.config import Settings
from services.embeddings.batcher import DynamicBatcher
from services.embeddings.model import EncodedText, load_encoder
from services.embeddings.servicer import EmbeddingsServicer
from services.runtime.server import service_server

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EmbeddingsService"].full_name


async def serve_embeddings(settings: Settings) -> int:
    """Run the embeddings server until SIGTERM/SIGINT; returns the exit code."""
    config = settings.embeddings
    server = service_server(settings, "embeddings", health_names=[SERVICE_NAME])
    servicer = EmbeddingsServicer(config, settings.server)
    pb_grpc.add_EmbeddingsServiceServicer_to_server(servicer, server.grpc)
    await server.start()

    async def load_model() -> None:
        encoder = await load_encoder(
            config.model_path,
            config.device,
            config.slice_overhead_tokens,
            attempts=config.model_load_attempts,
            backoff_base_s=config.model_load_backoff_base_s,
            runtime=config.runtime,
            runtime_cache_dir=config.runtime_cache_dir or str(settings.state_dir / "models"),
        )
        batcher: DynamicBatcher[EncodedText] = DynamicBatcher(
            encoder.encode,
            max_batch_texts=config.max_batch_texts,
            max_batch_delay_s=config.max_batch_delay_ms / 1000,
            max_queue_texts=config.max_queue_texts,
        )
        batcher.start()

        async def stop_model() -> None:
            await batcher.close()  # finish the queued work first
            await asyncio.to_thread(encoder.close)
            await servicer.cache.close()

        server.on_stopped(stop_model)
        servicer.attach(encoder, batcher)

    return await server.run(load_model())
