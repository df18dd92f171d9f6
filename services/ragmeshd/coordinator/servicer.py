"""The CoordinatorService RPC handlers."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from ragmesh.coordinator.v1 import coordinator_service_pb2 as pb
from ragmesh.coordinator.v1 import coordinator_service_pb2_grpc as pb_grpc
from ragmesh.search.v1 import search_service_pb2 as search_pb
from ragmeshd.coordinator import asking, convert
from ragmeshd.coordinator.answering import AnswerOutcome, BackendSlot
from ragmeshd.coordinator.augment import Augmenter, AugmentParams, Context
from ragmeshd.coordinator.feedback import InteractionsCollection
from ragmeshd.coordinator.grounding import Grounding
from ragmeshd.coordinator.records import (
    ExportFilter,
    Interaction,
)
from ragmeshd.coordinator.routing import (
    Side,
)
from ragmeshd.coordinator.search_client import (
    CollectionNotFoundError,
    SearchError,
    SearchRejectedError,
)
from ragmeshd.coordinator.sources import answer_sources
from ragmeshd.coordinator.store import InteractionStore, StoreUnavailableError
from ragmeshd.coordinator.threshold import LiveThreshold
from ragmeshd.coordinator.validation import (
    InvalidRequestError,
    check_collections,
    check_enum,
    check_export_ratings,
    check_outcome,
    check_query,
    check_range,
    check_rating,
    check_time_range,
    parse_interaction_id,
)
from ragmeshd.runtime import metrics, tenancy
from ragmeshd.runtime.errors import RpcFailure, invalid_argument, not_found, unavailable
from ragmeshd.runtime.server import call_timeout
from ragmeshd.runtime.work_meter import WorkMeter, presented_key_of
from ragmeshd.settings import CoordinatorSettings, ServerSettings

_SEARCH_MODES = tuple(search_pb.SearchMode.values())


@dataclass
class Dependencies:
    """What the handlers need once the server is ready."""

    store: InteractionStore
    augmenter: Augmenter
    interactions: InteractionsCollection
    slots: dict[Side, BackendSlot]
    threshold: LiveThreshold


def _search_failure(exc: SearchError) -> RpcFailure:
    if isinstance(exc, CollectionNotFoundError):
        return not_found(f"{exc}; ListCollections on the search service names the collections")
    if isinstance(exc, SearchRejectedError):
        return invalid_argument(f"the search service refused the query: {exc}")
    return unavailable(str(exc))


class CoordinatorServicer(pb_grpc.CoordinatorServiceServicer):
    def __init__(self, settings: CoordinatorSettings, server_settings: ServerSettings) -> None:
        self._settings = settings
        # Charges each generated token to a limited key's bucket.
        self.meter = WorkMeter(None)
        self._default_deadline_s = server_settings.default_deadline_s
        self._deps: Dependencies | None = None

    def attach(self, dependencies: Dependencies) -> None:
        self._deps = dependencies

    @property
    def deps(self) -> Dependencies:
        if self._deps is None:
            raise unavailable("the coordinator is starting (connecting to its database); retry")
        return self._deps

    # --- AugmentQuery and Ask -------------------------------------------------------------

    def _augment_params(self, request: pb.AugmentQueryRequest | pb.AskRequest) -> AugmentParams:
        s = self._settings
        try:
            return AugmentParams(
                query=check_query(request.query, s),
                collections=check_collections(list(request.collections), s),
                top_k=check_range(
                    request.top_k, "top_k", default=s.default_top_k, low=1, high=s.max_top_k
                ),
                max_tokens=check_range(
                    request.max_context_tokens,
                    "max_context_tokens",
                    default=s.default_context_tokens,
                    low=1,
                    high=s.max_context_tokens,
                ),
                mode=search_pb.SearchMode.ValueType(
                    check_enum(request.mode, "mode", _SEARCH_MODES)
                ),
            )
        except InvalidRequestError as exc:
            raise invalid_argument(str(exc)) from None

    async def _augment(self, params: AugmentParams, timeout_s: float) -> Context:
        try:
            return await self.deps.augmenter.augment(params, timeout_s)
        except SearchError as exc:
            raise _search_failure(exc) from None

    async def AugmentQuery(
        self, request: pb.AugmentQueryRequest, context: grpc.aio.ServicerContext
    ) -> pb.AugmentQueryResponse:
        params = self._augment_params(request)
        found = await self._augment(params, call_timeout(context, self._default_deadline_s))
        return pb.AugmentQueryResponse(
            passages=convert.passages(found.passages),
            context_token_count=found.token_count,
            confidence=found.confidence,
            system_prompt=found.system_prompt,
            prompt=found.prompt,
            collections=found.collections,
            duplicate_count=found.duplicate_count,
            dropped_count=found.dropped_count,
            search_ms=found.search_ms,
        )

    async def Ask(
        self, request: pb.AskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AskResponse]:
        started = time.perf_counter()
        deadline = time.monotonic() + call_timeout(context, self._default_deadline_s)
        deps = self.deps
        params = self._augment_params(request)
        options = asking.check_ask(request, self._settings, deps.slots)
        found = await self._augment(params, deadline - time.monotonic())
        routing = await asking.choose_route(
            options.forced, found.confidence, deps.threshold.current(), deps.slots
        )
        outcome = AnswerOutcome()
        grounding = Grounding(len(found.passages))
        events = asking.answer_events(
            routing,
            params.query,
            found,
            deps.slots,
            max_tokens=options.max_answer_tokens,
            deadline=deadline,
            outcome=outcome,
        )
        key = presented_key_of(context)
        async for event in grounding.filter(events):
            # A generated chunk (a token of the local model, a delta of a remote one) is a
            # unit of work: an answer stops when a limited key runs out (runtime/work_meter.py).
            await self.meter.require(key, 1, "the answer's next token")
            yield asking.chunk_response(event)
        yield pb.AskResponse(
            sources=answer_sources(found.passages, grounding.cited, grounding.removed)
        )
        metrics.ROUTING_DECISIONS.labels(routing.route.first.value).inc()
        record = asking.interaction_record(
            params.query,
            found,
            routing,
            outcome,
            answer=grounding.answer,
            started=started,
            owner_key_id=_owner_key_id(),
        )
        try:
            await deps.store.insert(record)
        except StoreUnavailableError as exc:
            raise unavailable(f"the answer could not be recorded: {exc}") from None
        yield asking.summary_response(record, found)

    # --- Interactions ---------------------------------------------------------------------

    async def RecordFeedback(
        self, request: pb.RecordFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordFeedbackResponse:
        deps = self.deps
        try:
            interaction_id = parse_interaction_id(request.interaction_id)
            rating = check_rating(request.rating)
            outcome = (
                check_outcome(request.outcome, self._settings)
                if request.HasField("outcome")
                else None
            )
        except InvalidRequestError as exc:
            raise invalid_argument(str(exc)) from None
        try:
            # Only its owner (or an interactions.export key within its collections) rates it.
            _check_owner(await deps.store.get(interaction_id), interaction_id)
            result = await deps.store.set_feedback(interaction_id, rating, outcome)
        except StoreUnavailableError as exc:
            raise unavailable(str(exc)) from None
        if result is None:
            raise not_found(f"there is no interaction {interaction_id}")
        interaction, _previous = result

        timeout_s = call_timeout(context, self._default_deadline_s)
        try:
            if rating == 1:
                await deps.interactions.publish(interaction, timeout_s=timeout_s)
            else:
                await deps.interactions.withdraw(interaction, timeout_s=timeout_s)
        except SearchError as exc:
            raise unavailable(
                f"the feedback is stored, but the {deps.interactions.name} collection could not"
                f" be updated ({exc}); send the same feedback again to retry"
            ) from None
        return pb.RecordFeedbackResponse(interaction=convert.interaction(interaction))

    async def GetInteraction(
        self, request: pb.GetInteractionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetInteractionResponse:
        deps = self.deps
        try:
            interaction_id = parse_interaction_id(request.interaction_id)
        except InvalidRequestError as exc:
            raise invalid_argument(str(exc)) from None
        try:
            interaction = await deps.store.get(interaction_id)
        except StoreUnavailableError as exc:
            raise unavailable(str(exc)) from None
        _check_owner(interaction, interaction_id)
        if interaction is None:
            raise not_found(f"there is no interaction {interaction_id}")
        return pb.GetInteractionResponse(interaction=convert.interaction(interaction))

    async def ExportInteractions(
        self, request: pb.ExportInteractionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExportInteractionsResponse]:
        deps = self.deps
        try:
            start, end = check_time_range(
                convert.optional_time(request, "start_time"),
                convert.optional_time(request, "end_time"),
            )
            limit = request.max_interactions
            if not 0 <= limit <= self._settings.max_export_interactions:
                raise InvalidRequestError(
                    f"max_interactions is {limit}; it must be 0 to"
                    f" {self._settings.max_export_interactions} (0: all that match)"
                )
            selection = ExportFilter(
                ratings=check_export_ratings(list(request.ratings)),
                start=start,
                end=end,
                limit=limit,
            )
        except InvalidRequestError as exc:
            raise invalid_argument(str(exc)) from None
        try:
            principal = tenancy.current()
            async for interaction in deps.store.export(selection):
                if principal is not None and not principal.may_read_interaction(
                    interaction.owner_key_id, interaction.collections
                ):
                    continue  # another tenant's: outside this key's collections
                yield pb.ExportInteractionsResponse(interaction=convert.interaction(interaction))
        except StoreUnavailableError as exc:
            raise unavailable(str(exc)) from None


def _owner_key_id() -> str:
    """The id of the key this Ask is made with: the interaction's owner."""
    principal = tenancy.current()
    return principal.key_id if principal is not None else ""


def _check_owner(interaction: Interaction | None, interaction_id: uuid.UUID) -> None:
    """PERMISSION_DENIED when the call's key may not read or rate `interaction`."""
    principal = tenancy.current()
    if (
        interaction is not None
        and principal is not None
        and not principal.may_read_interaction(interaction.owner_key_id, interaction.collections)
    ):
        raise RpcFailure(
            grpc.StatusCode.PERMISSION_DENIED,
            f"interaction {interaction_id} belongs to another API key; reading or rating it"
            " needs the scope 'interactions.export' (within the key's collections) or 'admin'",
        )
