"""Feeding rated interactions back into retrieval.

An interaction rated +1 is stored as a document of the interactions collection (id: the
interaction id; text: the question and the answer), so later queries that search that
collection get it as context. Any other rating removes it from there again, so an answer
rated -1 is never reused. Both are idempotent.
"""

from __future__ import annotations

import logging

from ragmeshd.coordinator.records import Interaction
from ragmeshd.coordinator.search_client import CollectionNotFoundError, SearchClient

_log = logging.getLogger("ragmesh.coordinator.feedback")


def interaction_document(interaction: Interaction, max_chars: int) -> str:
    """The text stored for a reusable interaction, at most `max_chars` long."""
    text = f"Question: {interaction.query.strip()}\nAnswer: {interaction.answer.strip()}"
    return text[:max_chars]


class InteractionsCollection:
    """The search collection that holds interactions rated +1."""

    def __init__(self, search: SearchClient, name: str, *, max_chars: int) -> None:
        self._search = search
        self.name = name
        self._max_chars = max_chars
        self._known_to_exist = False

    async def publish(self, interaction: Interaction, *, timeout_s: float) -> None:
        """Store (or replace) the interaction's document; creates the collection if missing."""
        document_id = str(interaction.id)
        text = interaction_document(interaction, self._max_chars)
        metadata: dict[str, str | float | bool] = {
            "kind": "interaction",
            "value_score": interaction.value_score,
            "created_at": interaction.created_at.isoformat(),
        }
        if not self._known_to_exist:
            await self._create(timeout_s)
        try:
            await self._search.upsert_document(
                self.name, document_id, text, metadata, timeout_s=timeout_s
            )
        except CollectionNotFoundError:
            # Deleted behind our back: make it again, once.
            await self._create(timeout_s)
            await self._search.upsert_document(
                self.name, document_id, text, metadata, timeout_s=timeout_s
            )

    async def withdraw(self, interaction: Interaction, *, timeout_s: float) -> None:
        """Remove the interaction's document, if it is there."""
        deleted = await self._search.delete_documents(
            self.name, [str(interaction.id)], timeout_s=timeout_s
        )
        if deleted:
            _log.info(
                "interaction withdrawn from reuse",
                extra={"interaction_id": str(interaction.id), "rating": interaction.rating},
            )

    async def _create(self, timeout_s: float) -> None:
        if await self._search.ensure_collection(self.name, timeout_s=timeout_s):
            _log.info("interactions collection created", extra={"collection": self.name})
        self._known_to_exist = True
