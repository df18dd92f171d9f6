"""The qdrant-edge adapter (search/backends/qdrant_edge.py) answers the qdrant-client calls
the Qdrant backend makes, on a real EdgeShard in a temporary folder."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from qdrant_client import models as qm

from ragmeshd.search.backends.qdrant_edge import EdgeClient


def points() -> list[qm.PointStruct]:
    return [
        qm.PointStruct(
            id=str(uuid.uuid5(uuid.NAMESPACE_OID, str(n))),
            vector={
                "dense": [1.0, 0.0, 0.0, float(n)],
                "keywords": qm.SparseVector(indices=[n], values=[1.0]),
            },
            payload={"document_id": f"d{n}", "passage_index": 0, "metadata": {"n": n}},
        )
        for n in range(5)
    ]


def by_ids(*ids: str) -> qm.Filter:
    return qm.Filter(must=[qm.FieldCondition(key="document_id", match=qm.MatchAny(any=list(ids)))])


def test_the_calls_the_backend_makes(tmp_path: Path) -> None:
    async def scenario() -> None:
        client = EdgeClient(str(tmp_path))
        await client.create_collection(
            "c",
            vectors_config={"dense": qm.VectorParams(size=4, distance=qm.Distance.COSINE)},
            sparse_vectors_config={"keywords": qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
            metadata={"created_at": "x"},
        )
        assert await client.collection_exists("c")
        await client.upsert("c", points=points())
        assert (await client.count("c")).count == 5
        assert (await client.count("c", count_filter=by_ids("d1", "d2"))).count == 2
        in_range = qm.Filter(must=[qm.FieldCondition(key="metadata.n", range=qm.Range(gte=3))])
        assert (await client.count("c", count_filter=in_range)).count == 2
        dense, keyword = await client.query_batch_points(
            "c",
            requests=[
                qm.QueryRequest(query=[1.0, 0, 0, 0], using="dense", limit=2),
                qm.QueryRequest(
                    query=qm.SparseVector(indices=[3], values=[1.0]), using="keywords", limit=2
                ),
            ],
        )
        assert [p.payload["document_id"] for p in dense.points] == ["d0", "d1"]
        assert [p.payload["document_id"] for p in keyword.points] == ["d3"]
        first, following = await client.scroll("c", limit=3)
        rest, last = await client.scroll("c", limit=3, offset=following)
        assert len(first) == 3 and len(rest) == 2 and last is None
        await client.update_collection("c", metadata={"bm25_passages": 5})
        info = await client.get_collection("c")
        assert info.config.metadata == {"created_at": "x", "bm25_passages": 5}
        assert info.config.params.vectors["dense"].size == 4
        await client.delete("c", points_selector=qm.FilterSelector(filter=by_ids("d1")))
        await client.delete("c", points_selector=qm.PointIdsList(points=[points()[2].id]))
        assert (await client.count("c")).count == 3
        (record,) = await client.retrieve("c", ids=[points()[0].id])
        assert record.payload is not None and record.payload["document_id"] == "d0"
        await client.close()
        reopened = EdgeClient(str(tmp_path))
        assert (await reopened.count("c")).count == 3
        await reopened.delete_collection("c")
        assert (await reopened.get_collections()).collections == []

    asyncio.run(scenario())
