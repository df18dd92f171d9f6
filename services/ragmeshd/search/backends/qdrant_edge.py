"""Qdrant's own engine in-process (PyPI's qdrant-edge-py, beta) behind the subset of
qdrant-client's AsyncQdrantClient that the Qdrant backend (qdrant.py) uses.

It is the Qdrant backend's embedded default (search.qdrant_location empty: DIR is
STATE_DIR/qdrant-edge), or `search.qdrant_location = "edge:DIR"`. Each collection is an
EdgeShard in DIR/<collection>/shard with its creation parameters and metadata in
DIR/<collection>/meta.json (an EdgeShard has no collection metadata). One process at a time:
a second one cannot open a shard another holds (its write-ahead log is locked: "Can't init
WAL: WouldBlock"), so search replicas cannot share DIR. The backend's qdrant-client models
are translated here; the calls run in the event loop's thread, as qdrant-client's local mode
does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from qdrant_client import models as qm

_META = "meta.json"


def _edge() -> Any:
    # Imported on first use: a search server on pgvector or a Qdrant server never loads it.
    import qdrant_edge

    return qdrant_edge


def _condition(condition: Any) -> Any:
    edge = _edge()
    if isinstance(condition, qm.Filter):
        return _filter(condition)
    if isinstance(condition, qm.IsEmptyCondition):
        return edge.IsEmptyCondition(key=condition.is_empty.key)
    if isinstance(condition, qm.FieldCondition):
        match, interval = condition.match, condition.range
        if isinstance(match, qm.MatchValue):
            return edge.FieldCondition(key=condition.key, match=edge.MatchValue(match.value))
        if isinstance(match, qm.MatchAny):
            return edge.FieldCondition(key=condition.key, match=edge.MatchAny(list(match.any)))
        if isinstance(interval, qm.Range):
            bounds = {k: getattr(interval, k) for k in ("gte", "gt", "lte", "lt")}
            return edge.FieldCondition(key=condition.key, range=edge.RangeFloat(**bounds))
    raise NotImplementedError(f"no qdrant-edge translation of {condition!r}")


def _filter(conditions: qm.Filter | None) -> Any:
    if conditions is None:
        return None

    def each(part: Any) -> list[Any] | None:
        if part is None:
            return None
        return [_condition(c) for c in (part if isinstance(part, list) else [part])]

    return _edge().Filter(
        must=each(conditions.must),
        should=each(conditions.should),
        must_not=each(conditions.must_not),
    )


def _payload(record: Any) -> dict[str, Any]:
    return dict(record.payload or {})


def _vectors(record: Any) -> dict[str, Any]:
    """A record's named vectors as qdrant-client models (sparse ones are qdrant-edge's own)."""
    edge = _edge()
    return {
        name: qm.SparseVector(indices=list(v.indices), values=list(v.values))
        if isinstance(v, edge.SparseVector)
        else list(v)
        for name, v in dict(record.vector or {}).items()
    }


class EdgeClient:
    """The AsyncQdrantClient methods qdrant.py calls, over one EdgeShard per collection."""

    def __init__(self, directory: str) -> None:
        self._root = Path(directory)
        self._root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, Any] = {}

    def _shard(self, name: str) -> Any:
        if name not in self._shards:
            self._shards[name] = _edge().EdgeShard.load(str(self._root / name / "shard"))
        return self._shards[name]

    def _meta(self, name: str) -> dict[str, Any]:
        return dict(json.loads((self._root / name / _META).read_text()))

    async def close(self) -> None:
        for shard in self._shards.values():
            shard.close()
        self._shards.clear()

    async def get_collections(self) -> qm.CollectionsResponse:
        names = sorted(p.parent.name for p in self._root.glob(f"*/{_META}"))
        return qm.CollectionsResponse(collections=[qm.CollectionDescription(name=n) for n in names])

    async def collection_exists(self, name: str) -> bool:
        return (self._root / name / _META).exists()

    async def create_collection(
        self,
        name: str,
        vectors_config: dict[str, qm.VectorParams],
        sparse_vectors_config: dict[str, qm.SparseVectorParams],
        metadata: dict[str, Any],
    ) -> None:
        edge = _edge()
        (dense_name, dense), *_ = vectors_config.items()
        hnsw = dense.hnsw_config or qm.HnswConfigDiff()
        m, ef = hnsw.m or 16, hnsw.ef_construct or 100
        config = edge.EdgeConfig(
            vectors={
                dense_name: edge.EdgeVectorParams(
                    size=dense.size,
                    distance=edge.Distance.Cosine,
                    hnsw_config=edge.HnswIndexConfig(
                        m=m, ef_construct=ef, full_scan_threshold=10000
                    ),
                )
            },
            sparse_vectors={
                sparse: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)
                for sparse in sparse_vectors_config
            },
        )
        folder = self._root / name
        (folder / "shard").mkdir(parents=True)
        self._shards[name] = edge.EdgeShard.create(str(folder / "shard"), config)
        meta = {"dense": dense_name, "size": dense.size, "m": m, "ef": ef, "metadata": metadata}
        (folder / _META).write_text(json.dumps(meta))

    async def get_collection(self, name: str) -> Any:
        meta = self._meta(name)
        hnsw = qm.HnswConfigDiff(m=meta["m"], ef_construct=meta["ef"])
        dense = qm.VectorParams(size=meta["size"], distance=qm.Distance.COSINE, hnsw_config=hnsw)
        config = SimpleNamespace(
            params=SimpleNamespace(vectors={meta["dense"]: dense}),
            metadata=meta["metadata"],
            hnsw_config=hnsw,
        )
        return SimpleNamespace(config=config)

    async def update_collection(self, name: str, metadata: dict[str, Any]) -> None:
        meta = self._meta(name)
        meta["metadata"] = {**meta["metadata"], **metadata}
        (self._root / name / _META).write_text(json.dumps(meta))

    async def delete_collection(self, name: str) -> None:
        shard = self._shards.pop(name, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(self._root / name)

    async def count(
        self, name: str, count_filter: qm.Filter | None = None, exact: bool = True
    ) -> qm.CountResult:
        request = _edge().CountRequest(exact=exact, filter=_filter(count_filter))
        return qm.CountResult(count=self._shard(name).count(request))

    async def upsert(self, name: str, points: list[qm.PointStruct], wait: bool = True) -> None:
        edge = _edge()

        def vector(value: Any) -> Any:
            if isinstance(value, qm.SparseVector):
                return edge.SparseVector(indices=value.indices, values=value.values)
            return list(value)

        converted = [
            edge.Point(
                id=str(p.id),
                vector={k: vector(v) for k, v in dict(p.vector).items()},  # type: ignore[arg-type]
                payload=p.payload,
            )
            for p in points
        ]
        self._shard(name).update(edge.UpdateOperation.upsert_points(converted))

    async def delete(self, name: str, points_selector: Any, wait: bool = True) -> None:
        edge = _edge()
        if isinstance(points_selector, qm.PointIdsList):
            ids = [str(i) for i in points_selector.points]
            operation = edge.UpdateOperation.delete_points(ids)
        else:
            operation = edge.UpdateOperation.delete_points_by_filter(
                _filter(points_selector.filter)
            )
        self._shard(name).update(operation)

    async def scroll(
        self,
        name: str,
        scroll_filter: qm.Filter | None = None,
        limit: int = 10,
        offset: Any = None,
        with_payload: Any = True,
        with_vectors: bool = False,
    ) -> tuple[list[qm.Record], Any]:
        request = _edge().ScrollRequest(
            offset=offset,
            limit=limit,
            filter=_filter(scroll_filter),
            with_payload=True,
            with_vector=with_vectors,
        )
        records, following = self._shard(name).scroll(request)
        found = [
            qm.Record(
                id=str(r.id), payload=_payload(r), vector=_vectors(r) if with_vectors else None
            )
            for r in records
        ]
        return found, (None if following is None else str(following))

    async def retrieve(
        self, name: str, ids: list[str], with_payload: Any = True
    ) -> list[qm.Record]:
        records = self._shard(name).retrieve(
            [str(i) for i in ids], with_payload=True, with_vector=False
        )
        return [qm.Record(id=str(r.id), payload=_payload(r)) for r in records]

    async def query_batch_points(self, name: str, requests: list[qm.QueryRequest]) -> list[Any]:
        edge = _edge()
        responses = []
        for request in requests:
            query = request.query
            if isinstance(query, qm.SparseVector):
                query = edge.SparseVector(indices=query.indices, values=query.values)
            found = self._shard(name).query(
                edge.QueryRequest(
                    limit=request.limit or 10,
                    query=edge.Query.Nearest(query, using=request.using),
                    filter=_filter(request.filter),
                    with_payload=True,
                )
            )
            points = [
                qm.ScoredPoint(id=str(p.id), version=0, score=p.score, payload=_payload(p))
                for p in found
            ]
            responses.append(SimpleNamespace(points=points))
        return responses
