"""The search replica's in-memory keyword indexes (ragmeshd/search/bm25_index.py), kept
consistent with the collection's writes in PostgreSQL.

Every write raises the collection's `write_version` and records the documents it touched in
`search_changes_<id>`, in its own transaction (record_changes below; migration 0006). A query
reads the version with the collection row; when this replica's index is older, the query
first brings it up to date: in one REPEATABLE READ snapshot it reads the version, the
documents changed since the index's version, their current passages and any new terms. So a
search that starts after a write was acknowledged, on any replica, ranks with it.

An index is built from the collection's passages in one snapshot: inline for a small
collection, in the background for a large one (the query that finds none answers through the
SQL planner meanwhile, as does one whose replica is too far behind the change log, while the
index is rebuilt). Filtered keyword queries always use the SQL planner, which filters on the
passages' metadata in the same scan.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import asyncpg

from ragmeshd.postgres.transaction_pool import acquire_snapshot, isolated_transaction
from ragmeshd.search.backends.pg_keywords import terms_table
from ragmeshd.search.bm25_index import Bm25Index, PassageBatch, PassageKey
from ragmeshd.search.records import Filter, Visible

_log = logging.getLogger("ragmesh.search.keyword_index")

# Change log entries kept per collection (writes); a replica further behind rebuilds.
CHANGE_LOG_KEPT = 1024
# A collection this small is indexed inline by the first query (tens of milliseconds).
INLINE_BUILD_PASSAGES = 20_000
# Catching up on more changed documents than this share of the index rebuilds it instead
# (the delta segment is rebuilt on every change, so it must stay small).
MAX_DELTA_SHARE = 0.2
# Indexes kept per replica (least recently used go first).
MAX_COLLECTIONS = 8
# Passages read per round trip while building (the event loop serves calls in between).
BUILD_CHUNK_ROWS = 5000


def changes_table(collection_id: int) -> str:
    return f"search_changes_{int(collection_id)}"


def changes_ddl(collection_id: int) -> str:
    name = changes_table(collection_id)
    return f"""
        CREATE TABLE {name} (version bigint NOT NULL, document_id text NOT NULL);
        CREATE INDEX {name}_version ON {name} (version);
    """


async def record_changes(
    conn: asyncpg.Connection, collection_id: int, version: int, document_ids: list[str]
) -> None:
    """Inside a write's transaction (the collection row locked, `version` its new
    write_version): log the touched documents and trim the log."""
    name = changes_table(collection_id)
    await conn.execute(
        f"INSERT INTO {name} (version, document_id) SELECT $1, unnest($2::text[])",
        version,
        document_ids,
    )
    if version % 64 == 0:  # trim now and then, not on every write
        await conn.execute(f"DELETE FROM {name} WHERE version <= $1", version - CHANGE_LOG_KEPT)


@dataclass
class _Entry:
    index: Bm25Index | None = None
    terms: dict[str, int] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    build: asyncio.Task[None] | None = None


class KeywordIndexes:
    """One replica's indexes, by collection id."""

    def __init__(self, *, k1: float, b: float) -> None:
        self._k1, self._b = k1, b
        self._entries: OrderedDict[int, _Entry] = OrderedDict()

    def forget(self, collection_id: int) -> None:
        entry = self._entries.pop(collection_id, None)
        if entry is not None and entry.build is not None:
            entry.build.cancel()

    async def search(
        self,
        pool: asyncpg.Pool,
        conn: asyncpg.Connection,
        collection: asyncpg.Record,
        terms: list[str],
        limit: int,
        groups: tuple[str, ...] | None = None,
    ) -> list[tuple[PassageKey, float]] | None:
        """The top passages from this replica's index, at least as new as `collection` (the
        row just read); None when there is no usable index yet (use the SQL planner)."""
        collection_id = int(collection["id"])
        entry = self._entries.get(collection_id)
        if entry is None:
            entry = self._entries[collection_id] = _Entry()
            while len(self._entries) > MAX_COLLECTIONS:
                self.forget(next(iter(self._entries)))
        self._entries.move_to_end(collection_id)
        version = int(collection["write_version"])
        if entry.index is None or entry.index.version < version:
            async with entry.lock:
                stale = entry.index is not None and entry.index.version < version
                if stale and not await self._catch_up(conn, collection_id, entry):
                    entry.index = None
                if entry.index is None:
                    if int(collection["passage_count"]) <= INLINE_BUILD_PASSAGES:
                        await self._build(conn, collection_id, entry)
                    else:
                        self._start_build(pool, collection_id, entry)
                        return None
        index = entry.index
        assert index is not None
        return index.search([entry.terms[t] for t in terms if t in entry.terms], limit, groups)

    def _start_build(self, pool: asyncpg.Pool, collection_id: int, entry: _Entry) -> None:
        if entry.build is not None and not entry.build.done():
            return

        async def build() -> None:
            try:
                async with acquire_snapshot(pool) as conn:
                    await self._build(conn, collection_id, entry)
            except Exception:  # the next query tries again; this one used the SQL planner
                _log.exception(
                    "building the keyword index failed", extra={"collection_id": collection_id}
                )

        entry.build = asyncio.create_task(build())

    async def _build(self, conn: asyncpg.Connection, collection_id: int, entry: _Entry) -> None:
        started = time.perf_counter()
        batches = []
        async with isolated_transaction(conn, isolation="repeatable_read", readonly=True):
            version = await conn.fetchval(
                "SELECT write_version FROM search_collections WHERE id = $1", collection_id
            )
            if version is None:
                return  # dropped meanwhile
            terms = await conn.fetch(f"SELECT term, id FROM {terms_table(collection_id)}")
            cursor = conn.cursor(
                f"SELECT {_PASSAGE_COLUMNS} FROM search_passages_{int(collection_id)}",
                prefetch=BUILD_CHUNK_ROWS,
            )
            rows: list[asyncpg.Record] = []
            async for row in cursor:
                rows.append(row)
                if len(rows) == BUILD_CHUNK_ROWS:
                    batches.append(_batch(rows))
                    rows = []
            batches.append(_batch(rows))
        batch = PassageBatch.concatenate(batches)
        # Sorting the postings releases the GIL: calls keep being served meanwhile.
        index = await asyncio.to_thread(Bm25Index, int(version), batch, k1=self._k1, b=self._b)
        if entry.index is None or entry.index.version < index.version:
            entry.terms = {row["term"]: int(row["id"]) for row in terms}
            entry.index = index
        _log.info(
            "keyword index built",
            extra={
                "collection_id": collection_id,
                "passages": index.passages,
                "postings": len(batch.terms),
                "write_version": index.version,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    async def _catch_up(self, conn: asyncpg.Connection, collection_id: int, entry: _Entry) -> bool:
        """Bring entry.index to the collection's current version from the change log; False
        when it is too far behind (rebuild instead)."""
        index = entry.index
        assert index is not None
        async with isolated_transaction(conn, isolation="repeatable_read", readonly=True):
            version = await conn.fetchval(
                "SELECT write_version FROM search_collections WHERE id = $1", collection_id
            )
            if version is None or version - index.version > CHANGE_LOG_KEPT:
                return False
            changed = [
                row["document_id"]
                for row in await conn.fetch(
                    f"SELECT DISTINCT document_id FROM {changes_table(collection_id)}"
                    " WHERE version > $1 AND version <= $2",
                    index.version,
                    version,
                )
            ]
            if len(changed) + index.delta_passages > MAX_DELTA_SHARE * max(index.passages, 1000):
                return False
            rows = await conn.fetch(
                f"SELECT {_PASSAGE_COLUMNS}"
                f" FROM search_passages_{int(collection_id)} WHERE document_id = ANY($1::text[])",
                changed,
            )
            known = max(entry.terms.values(), default=0)
            new_terms = await conn.fetch(
                f"SELECT term, id FROM {terms_table(collection_id)} WHERE id > $1", known
            )
        entry.terms.update({row["term"]: int(row["id"]) for row in new_terms})
        index.apply(int(version), changed, _batch(rows))
        return True


# Each passage's keyword columns and its document's `acl` (groups; NULL for none).
_PASSAGE_COLUMNS = (
    "document_id, passage_index, length, terms, frequencies, metadata ->> 'acl' AS acl"
)


def index_groups(conditions: Filter) -> tuple[bool, tuple[str, ...] | None]:
    """Whether the index can answer a search with these conditions (none, or only the key's
    document groups: a visibility mask inside the index, before top-k), and the groups to
    pass it (None: every passage)."""
    if not conditions:
        return True, None
    if len(conditions) == 1 and isinstance(conditions[0], Visible):
        return True, conditions[0].groups
    return False, None


def _batch(rows: list[asyncpg.Record]) -> PassageBatch:
    return PassageBatch.from_rows(
        [(row["document_id"], int(row["passage_index"])) for row in rows],
        [row["length"] for row in rows],
        [row["terms"] for row in rows],
        [row["frequencies"] for row in rows],
        [sys.intern(row["acl"]) if row["acl"] else "" for row in rows],
    )
