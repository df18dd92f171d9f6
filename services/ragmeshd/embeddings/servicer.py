"""The EmbeddingsService RPC handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import numpy as np

from ragmesh.embeddings.v1 import embeddings_service_pb2 as pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc
from ragmeshd import defaults
from ragmeshd.caching.redis_tier import RedisTier
from ragmeshd.embeddings.batcher import (
    BatcherClosedError,
    BatchTimeoutError,
    DynamicBatcher,
    QueueFullError,
)
from ragmeshd.embeddings.keeper import ModelKeeper
from ragmeshd.embeddings.model import EncodedText
from ragmeshd.embeddings.validation import InvalidRequestError, check_inputs, check_token_counts
from ragmeshd.embeddings.vector_cache import VectorCache
from ragmeshd.embeddings.worker import ModelProcess, ModelUnavailableError
from ragmeshd.runtime.errors import RpcFailure, invalid_argument, unavailable
from ragmeshd.runtime.server import call_timeout
from ragmeshd.runtime.work_meter import Charge, WorkMeter, presented_key_of, spent_message
from ragmeshd.settings import EmbeddingsSettings, ServerSettings

# How many messages of one EmbedStream may be in the batcher at once: enough to keep the
# model busy, few enough that one bulk client cannot fill the whole queue.
STREAM_MESSAGES_IN_FLIGHT = 4

# One stream message on its way through the batcher: (sequence, task of (encoder, embeddings)).
_PendingMessage = tuple[int, "asyncio.Future[tuple[ModelProcess, list[pb.Embedding]]]"]


class EmbeddingsServicer(pb_grpc.EmbeddingsServiceServicer):
    def __init__(self, settings: EmbeddingsSettings, server_settings: ServerSettings) -> None:
        self._settings = settings
        self._default_deadline_s = server_settings.default_deadline_s
        # Set once the model has loaded; until then, and while the keeper replaces a failed
        # model process, Embed answers UNAVAILABLE.
        self.keeper: ModelKeeper | None = None
        self.batcher: DynamicBatcher[EncodedText] | None = None
        self.cache = VectorCache(settings.cache_max_bytes, shared_tier(settings))
        # Charges each call's texts to a limited key's bucket (runtime/work_meter.py).
        self.meter = WorkMeter(None)

    def attach(self, keeper: ModelKeeper, batcher: DynamicBatcher[EncodedText]) -> None:
        self.keeper, self.batcher = keeper, batcher

    @property
    def encoder(self) -> ModelProcess | None:
        """The model process now serving, if any."""
        return self.keeper.encoder if self.keeper is not None else None

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        bulk = request.priority == pb.EMBED_PRIORITY_BULK
        # One text is one unit of work; Envoy charged the call's first one.
        await self.meter.require(
            presented_key_of(context), len(request.inputs) - 1, f"{len(request.inputs)} texts"
        )
        encoder, embeddings = await self._embed(
            request.inputs,
            request,
            call_timeout(context, self._default_deadline_s),
            shed=not bulk,
            bulk=bulk,
        )
        return pb.EmbedResponse(
            embeddings=embeddings, model=encoder.name, dimensions=encoder.dimensions
        )

    async def EmbedStream(
        self,
        request_iterator: AsyncIterator[pb.EmbedStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.EmbedStreamResponse]:
        # Messages are embedded concurrently (so the batcher can merge them) and answered
        # in order; the bounded queue of pending results gives the client backpressure.
        # None marks the end of the client's stream.
        pending: asyncio.Queue[_PendingMessage | None]
        pending = asyncio.Queue(maxsize=STREAM_MESSAGES_IN_FLIGHT)

        key = presented_key_of(context)

        async def read_requests() -> None:
            received = 0
            try:
                async for message in request_iterator:
                    received += 1
                    result, last = await self._stream_message(message, received, key)
                    await pending.put((message.sequence, result))
                    if last:
                        return
            except Exception as exc:
                # Reading failed (a message that does not parse aborts the call here, in this
                # task): hand the failure to the handler, which would otherwise wait for the
                # next message forever and hold its concurrency slot.
                await pending.put((-1, _failed(exc)))
                return
            await pending.put(None)

        reader = asyncio.ensure_future(read_requests())
        try:
            while (item := await pending.get()) is not None:
                sequence, task = item
                encoder, embeddings = await task
                yield pb.EmbedStreamResponse(
                    sequence=sequence,
                    embeddings=embeddings,
                    model=encoder.name,
                    dimensions=encoder.dimensions,
                )
            await reader
        finally:
            # Nothing of this stream may outlive its handler.
            leftovers: list[asyncio.Future[Any]] = [reader]
            while not pending.empty():
                if (item := pending.get_nowait()) is not None:
                    leftovers.append(item[1])
            for leftover in leftovers:
                leftover.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)

    async def _stream_message(
        self, message: pb.EmbedStreamRequest, received: int, key: str | None
    ) -> tuple[asyncio.Future[tuple[ModelProcess, list[pb.Embedding]]], bool]:
        """The pending result of a stream's `received`-th message, and whether the stream
        ends with it (too many messages, or its key cannot pay for its texts)."""
        if received > self._settings.max_stream_messages:
            return self._too_many_messages(), True
        # Each message pays for its texts as it arrives (Envoy charged the stream's first
        # unit): a stream stops when its key runs out.
        units = len(message.inputs) - (1 if received == 1 else 0)
        charged = await self.meter.charge(key, units)
        if not charged.allowed:
            return self._spent(units, charged), True
        prefix = f"message sequence={message.sequence}: "
        embedding = self._embed(
            message.inputs, message, self._default_deadline_s, prefix, shed=False
        )
        return asyncio.ensure_future(embedding), False

    def _spent(
        self, units: int, charged: Charge
    ) -> asyncio.Future[tuple[ModelProcess, list[pb.Embedding]]]:
        """A failed result that ends the stream at the message its key cannot pay for."""
        return _failed(
            RpcFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                spent_message(f"a message of {units} texts", charged),
            )
        )

    def _too_many_messages(self) -> asyncio.Future[tuple[ModelProcess, list[pb.Embedding]]]:
        """A failed result that ends the stream once the messages before it are answered."""
        limit = self._settings.max_stream_messages
        return _failed(
            RpcFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"one EmbedStream takes at most {limit} messages"
                " (embeddings.max_stream_messages); open a new stream for the rest",
            )
        )

    async def Info(
        self, request: pb.InfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.InfoResponse:
        s = self._settings
        encoder = self.encoder
        response = pb.InfoResponse(
            max_client_batch=s.max_client_batch,
            max_input_chars=s.max_input_chars,
            max_batch_texts=s.max_batch_texts,
            max_batch_delay_ms=int(s.max_batch_delay_ms),
            ready=encoder is not None,
        )
        if encoder is not None and self.batcher is not None:
            response.model = encoder.name
            response.dimensions = encoder.dimensions
            response.max_sequence_length = encoder.max_sequence_length
            response.device = encoder.device
            response.batches_run = self.batcher.stats.batches
            response.texts_embedded = self.batcher.stats.texts
            response.runtime = encoder.runtime
        _fill_cache_info(response.cache, self.cache)
        return response

    async def _embed(
        self,
        inputs: Sequence[str],
        options: pb.EmbedRequest | pb.EmbedStreamRequest,
        timeout_s: float,
        prefix: str = "",
        *,
        shed: bool = True,
        bulk: bool = False,
    ) -> tuple[ModelProcess, list[pb.Embedding]]:
        """Validate and embed one call's texts; failures raise RpcFailure. `shed`: refuse
        them at once when the queue is too long (a stream's messages are not shed: the stream
        is paced by its few messages in flight instead). `bulk`: queue them in the bulk lane,
        behind every interactive call, waiting for room rather than being refused."""
        keeper, encoder, batcher = self.keeper, self.encoder, self.batcher
        if keeper is None or encoder is None or batcher is None:
            raise unavailable("the embedding model is loading or restarting; retry shortly")
        texts = list(inputs)
        try:
            check_inputs(
                texts,
                max_client_batch=self._settings.max_client_batch,
                max_input_chars=self._settings.max_input_chars,
            )
            truncate = options.truncate if options.HasField("truncate") else True
            if not truncate:
                counts = await asyncio.to_thread(keeper.count_tokens, texts)
                check_token_counts(counts, max_sequence_length=encoder.max_sequence_length)
        except InvalidRequestError as exc:
            raise invalid_argument(prefix + str(exc)) from None
        except ModelUnavailableError as exc:
            raise unavailable(prefix + str(exc)) from None

        # Load shedding: a call whose texts would wait behind the queue longer than the
        # server may keep them (or than the caller's deadline) is refused now rather than
        # time out later. Only the queue ahead counts, not the call's own texts: a large
        # batch (an ingestion's upsert) that finds the queue empty is served, however long
        # its own encoding takes. A call answered wholly from the cache is never shed.
        limit_s = min(self._settings.max_queue_wait_ms / 1000, timeout_s)

        async def submit_uncached(missing: list[str]) -> list[EncodedText]:
            wait_s = batcher.expected_wait_s()
            if shed and wait_s > limit_s:
                raise RpcFailure(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{prefix}the embedding queue is {wait_s:.2f} s long, more than this server"
                    f" waits ({limit_s:.2f} s: embeddings.max_queue_wait_ms or the call's"
                    " deadline); retry later with backoff",
                    # Come back when the queue ahead has drained.
                    retry_after_s=wait_s,
                )
            return await batcher.submit(missing, bulk=bulk)

        try:
            results = await asyncio.wait_for(
                self.cache.embed(f"{encoder.identity}/{encoder.runtime}", texts, submit_uncached),
                timeout=timeout_s,
            )
        except QueueFullError as exc:
            raise RpcFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                str(exc),
                retry_after_s=max(batcher.expected_wait_s(), 0.1),
            ) from None
        except (BatcherClosedError, BatchTimeoutError, ModelUnavailableError) as exc:
            # The model failed or the server stops: not the call's fault, and another
            # replica (Envoy retries UNAVAILABLE) may answer it.
            raise unavailable(prefix + str(exc)) from None
        except TimeoutError:
            raise RpcFailure(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{prefix}the call's deadline ({timeout_s:.3f} s) passed before its texts were"
                " embedded",
            ) from None
        normalize = options.normalize if options.HasField("normalize") else True
        return encoder, [_to_proto(result, normalize) for result in results]


def shared_tier(settings: EmbeddingsSettings) -> RedisTier | None:
    """The shared cache tier, when a Redis URL is configured."""
    if not settings.cache_redis_url:
        return None
    return RedisTier(
        "embeddings_redis",
        settings.cache_redis_url,
        ttl_s=settings.cache_redis_ttl_s,
        timeout_s=defaults.CACHE_REDIS_TIMEOUT_S,
        retry_s=defaults.CACHE_REDIS_RETRY_S,
    )


def _fill_cache_info(info: pb.EmbeddingCacheInfo, cache: VectorCache) -> None:
    memory = cache.memory
    info.max_bytes, info.bytes, info.entries = memory.max_bytes, memory.bytes, len(memory)
    info.hits, info.misses = memory.stats.hits, memory.stats.misses
    info.evictions = memory.stats.evictions
    if cache.shared is not None:
        info.shared_tier = True
        info.shared_hits, info.shared_misses = cache.shared.hits, cache.shared.misses


def _failed(exc: Exception) -> asyncio.Future[tuple[ModelProcess, list[pb.Embedding]]]:
    failure: asyncio.Future[tuple[ModelProcess, list[pb.Embedding]]]
    failure = asyncio.get_running_loop().create_future()
    failure.set_exception(exc)
    return failure


def _to_proto(result: EncodedText, normalize: bool) -> pb.Embedding:
    vector = result.vector
    if normalize:
        norm = float(np.linalg.norm(vector))
        if norm > 0:
            vector = vector / norm
    return pb.Embedding(
        values=vector.tolist(), token_count=result.token_count, truncated=result.truncated
    )
