"""The `ragmesh.sources` of a chat completion: the answer's numbered sources as Ask streams
them (number, source, title, section, page, cited), with the passages' places."""

from __future__ import annotations

from typing import Any

from ragmesh.coordinator.v1 import coordinator_service_pb2 as coordinator_pb


def source_list(
    summary: coordinator_pb.AskSummary, sources: coordinator_pb.AnswerSources | None = None
) -> list[dict[str, Any]]:
    """One entry per context passage, numbered as the answer cites them ([n])."""
    numbered = list(sources.sources) if sources is not None else []
    entries = []
    for number, passage in enumerate(summary.passages, 1):
        entry: dict[str, Any] = {
            "number": number,
            "collection": passage.collection,
            "document_id": passage.document_id,
            "passage_index": passage.passage_index,
            "score": passage.score,
            "text": passage.text,
            "source": passage.document_id,
            "title": "",
            "section": "",
            "page": None,
            "cited": False,
        }
        if number <= len(numbered):
            source = numbered[number - 1]
            entry.update(
                source=source.source,
                title=source.title,
                section=source.section,
                page=source.page or None,
                cited=source.cited,
            )
        entries.append(entry)
    return entries
