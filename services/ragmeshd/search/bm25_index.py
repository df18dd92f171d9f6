"""An exact BM25 index of one collection's passages in memory (numpy posting lists).

The pgvector backend's keyword search in SQL reads every candidate passage's row; at 100,000
passages of real-shaped text that is hundreds of milliseconds a query. This index holds the
same terms (ragmeshd/search/keywords.py, the ids of the collection's term table) as posting
lists: per term, the ascending slots of the passages that contain it and its frequency in
each. Every passage has a slot; replacing or deleting a passage marks its slot dead and a new
passage takes a new slot, so a write never rewrites the posting lists already built:

  - the base segment holds the postings of the passages present when the index was built;
  - the delta segment holds those added since (rebuilt from them on every change, which
    stays cheap because the owner rebuilds the whole index once the delta grows large).

Document frequencies, the passage count and the total length are kept exactly through every
change, and scores are computed per query from them, so the ranking is exactly BM25 with the
collection's current statistics (never a precomputed impact with a stale average length).

A query is scored term at a time, rarest term first, into one accumulator per slot (MaxScore,
Turtle & Flood 1995): once the sum of the upper bounds of the terms not yet read is below the
current k-th best partial score, no passage that contains none of the terms read so far can
enter the top k, so the remaining (common, long) posting lists are only probed for the
candidates already found, and a candidate is dropped once its partial score plus those bounds
falls below the k-th best. A term's upper bound is its BM25 weight at its highest frequency in
the shortest passage it occurs in (kept per segment; deletions leave it an upper bound).
Every passage's score adds its terms' weights in the same order, so equal scores are equal
to the bit and ties are broken by (document id, passage index), as the SQL ranking does.

Document groups (issue 24): each passage may carry its document's `acl` (groups,
comma-separated). A search for a key's groups scores only the slots it may see (a visibility
mask over the slots, built once per groups and write version), so the top k is taken among
visible passages, never filtered after; the statistics stay the whole collection's, as in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ragmeshd.search.keywords import bm25_idf, bm25_term_bound

PassageKey = tuple[str, int]  # (document id, passage index)
MAX_CACHED_MASKS = 16  # visibility masks kept per index (one per distinct set of groups)


@dataclass(frozen=True)
class PassageBatch:
    """Passages with their keyword columns, term ids in compressed-row form: passage i's term
    ids are terms[offsets[i]:offsets[i + 1]] with frequencies at the same positions."""

    keys: list[PassageKey]
    lengths: np.ndarray  # int64, one per passage
    offsets: np.ndarray  # int64, len(keys) + 1
    # int32 (4 bytes a posting; the term ids are the term table's integer ids)
    terms: np.ndarray
    frequencies: np.ndarray
    # Each passage's document `acl` ("" for none); empty when no passage has one.
    acls: tuple[str, ...] = ()

    def acl(self, row: int) -> str:
        return self.acls[row] if self.acls else ""

    @staticmethod
    def from_rows(
        keys: list[PassageKey],
        lengths: Sequence[int],
        terms: Sequence[Sequence[int]],
        frequencies: Sequence[Sequence[int]],
        acls: Sequence[str] = (),
    ) -> PassageBatch:
        counts = np.fromiter((len(t) for t in terms), dtype=np.int64, count=len(terms))
        offsets = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        total = int(offsets[-1])
        return PassageBatch(
            keys,
            np.asarray(lengths, dtype=np.int64).reshape(len(keys)),
            offsets,
            np.fromiter((i for t in terms for i in t), dtype=np.int32, count=total),
            np.fromiter((n for f in frequencies for n in f), dtype=np.int32, count=total),
            tuple(acls) if any(acls) else (),
        )

    @staticmethod
    def concatenate(batches: Sequence[PassageBatch]) -> PassageBatch:
        if len(batches) == 1:
            return batches[0]
        offsets = [np.zeros(1, dtype=np.int64)]
        base = 0
        for batch in batches:
            offsets.append(batch.offsets[1:] + base)
            base += int(batch.offsets[-1])
        return PassageBatch(
            [key for batch in batches for key in batch.keys],
            np.concatenate([b.lengths for b in batches] or [np.zeros(0, np.int64)]),
            np.concatenate(offsets),
            np.concatenate([b.terms for b in batches] or [np.zeros(0, np.int32)]),
            np.concatenate([b.frequencies for b in batches] or [np.zeros(0, np.int32)]),
            tuple(b.acl(i) for b in batches for i in range(len(b.keys)))
            if any(b.acls for b in batches)
            else (),
        )


class _Segment:
    """Posting lists of the passages in slots [first_slot, first_slot + len(batch)),
    immutable once built."""

    def __init__(self, first_slot: int, batch: PassageBatch) -> None:
        counts = np.diff(batch.offsets)
        # int32 slots and frequencies: 8 bytes a posting. Scores are float64 all the same
        # (an int32 array times a float is a float64 array).
        slots = np.repeat(
            np.arange(first_slot, first_slot + len(batch.keys), dtype=np.int32), counts
        )
        # Stable: within a term the slots stay ascending, which probing relies on.
        order = np.argsort(batch.terms, kind="stable")
        sorted_terms = batch.terms[order]
        self.slots = slots[order]
        self.frequencies = batch.frequencies[order]
        self.term_ids, starts = np.unique(sorted_terms, return_index=True)
        self.starts = np.append(starts, len(sorted_terms)).astype(np.int64)
        if len(self.term_ids):
            self.max_frequency = np.maximum.reduceat(self.frequencies, starts)
            self.min_length = np.minimum.reduceat(batch.lengths[self.slots - first_slot], starts)
        else:
            self.max_frequency = self.min_length = np.zeros(0)

    def find(self, term: int) -> int:
        """The term's row in this segment, or -1."""
        row = int(np.searchsorted(self.term_ids, term))
        return row if row < len(self.term_ids) and self.term_ids[row] == term else -1


class Bm25Index:
    """One collection's passages at one write version; see the module docstring."""

    def __init__(self, version: int, batch: PassageBatch, *, k1: float, b: float) -> None:
        self.version = version
        self._k1, self._b = k1, b
        count = len(batch.keys)
        self._keys: list[PassageKey] = list(batch.keys)
        self._lengths = batch.lengths.astype(np.float64)
        self._alive = np.ones(count, dtype=bool)
        self._slots_of: dict[str, list[int]] = {}
        for slot, (document_id, _) in enumerate(self._keys):
            self._slots_of.setdefault(document_id, []).append(slot)
        # The slots of passages with an `acl`, by acl text; dead ones are masked by _alive.
        self._acl_slots: dict[str, list[int]] = {}
        self._add_acls(0, batch)
        self._masks: dict[tuple[str, ...], np.ndarray] = {}
        self._df = np.bincount(batch.terms, minlength=1).astype(np.int64)
        self._passages = count
        self._total_length = int(batch.lengths.sum())
        self._base = _Segment(0, batch)
        self._base_batch = batch
        self._delta_batches: list[PassageBatch] = []
        self._delta: _Segment | None = None
        self._norm_cache: tuple[float, np.ndarray] | None = None

    # -- size ----------------------------------------------------------------------------

    @property
    def passages(self) -> int:
        return self._passages

    @property
    def delta_passages(self) -> int:
        return sum(len(b.keys) for b in self._delta_batches)

    # -- changes -------------------------------------------------------------------------

    def apply(self, version: int, changed_documents: Iterable[str], added: PassageBatch) -> None:
        """Bring the index to `version`: the passages of `changed_documents` (replaced or
        deleted) go, the `added` passages (the changed documents' current ones) come."""
        for document_id in set(changed_documents):
            for slot in self._slots_of.pop(document_id, []):
                terms, _ = self._slot_terms(slot)
                np.subtract.at(self._df, terms, 1)
                self._alive[slot] = False
                self._passages -= 1
                self._total_length -= int(self._lengths[slot])
        if added.keys:
            first = len(self._keys)
            self._keys.extend(added.keys)
            for slot, (document_id, _) in enumerate(added.keys, start=first):
                self._slots_of.setdefault(document_id, []).append(slot)
            self._add_acls(first, added)
            self._lengths = np.concatenate([self._lengths, added.lengths.astype(np.float64)])
            self._alive = np.concatenate([self._alive, np.ones(len(added.keys), dtype=bool)])
            if len(added.terms) and int(added.terms.max()) >= len(self._df):
                self._df = np.concatenate(
                    [self._df, np.zeros(int(added.terms.max()) + 1 - len(self._df), np.int64)]
                )
            np.add.at(self._df, added.terms, 1)
            self._passages += len(added.keys)
            self._total_length += int(added.lengths.sum())
            self._delta_batches.append(added)
            self._delta = _Segment(len(self._base_batch.keys), PassageBatch.concatenate(
                self._delta_batches
            ))  # fmt: skip
        self._norm_cache = None
        self._masks.clear()
        self.version = version

    def _add_acls(self, first_slot: int, batch: PassageBatch) -> None:
        for row, acl in enumerate(batch.acls):
            if acl:
                self._acl_slots.setdefault(acl, []).append(first_slot + row)

    def _visible(self, groups: Sequence[str] | None) -> np.ndarray:
        """The live slots a key holding `groups` may see (None: every live slot)."""
        if groups is None or not self._acl_slots:
            return self._alive
        held = tuple(sorted(set(groups)))
        mask = self._masks.get(held)
        if mask is None:
            mask = self._alive.copy()
            for acl, slots in self._acl_slots.items():
                if held_none_of(acl, held):
                    mask[slots] = False
            if len(self._masks) >= MAX_CACHED_MASKS:
                self._masks.pop(next(iter(self._masks)))
            self._masks[held] = mask
        return mask

    def _slot_terms(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        batch, row = self._base_batch, slot
        if slot >= len(self._base_batch.keys):
            row -= len(self._base_batch.keys)
            for batch in self._delta_batches:
                if row < len(batch.keys):
                    break
                row -= len(batch.keys)
        start, end = batch.offsets[row], batch.offsets[row + 1]
        return batch.terms[start:end], batch.frequencies[start:end]

    # -- queries -------------------------------------------------------------------------

    def document_frequency(self, term: int) -> int:
        return int(self._df[term]) if 0 <= term < len(self._df) else 0

    def _norms(self, average_length: float) -> np.ndarray:
        """k1 * (1 - b + b * length / average) per slot, cached until the next change."""
        if self._norm_cache is None or self._norm_cache[0] != average_length:
            norms = self._k1 * (1 - self._b + self._b * self._lengths / average_length)
            self._norm_cache = (average_length, norms)
        return self._norm_cache[1]

    def search(
        self, terms: Sequence[int], limit: int, groups: Sequence[str] | None = None
    ) -> list[tuple[PassageKey, float]]:
        """The top `limit` passages for the query's term ids, best first, with their scores
        (ties by document id, passage index); with `groups`, among the passages a key holding
        them may see (those without `acl` and those whose `acl` names one of them)."""
        visible = self._visible(groups)
        present = [t for t in dict.fromkeys(terms) if self.document_frequency(t) > 0]
        if not present or not self._passages or limit <= 0:
            return []
        average = max(self._total_length / self._passages, 1.0)
        norms = self._norms(average)
        k1 = self._k1
        segments = [s for s in (self._base, self._delta) if s is not None]
        plans = []  # (idf, bound, [(slots, frequencies)]) per term
        for term in present:
            idf = bm25_idf(self.document_frequency(term), self._passages)
            lists, bound = [], 0.0
            for segment in segments:
                row = segment.find(term)
                if row < 0:
                    continue
                start, end = segment.starts[row], segment.starts[row + 1]
                lists.append((segment.slots[start:end], segment.frequencies[start:end]))
                term_bound = bm25_term_bound(
                    idf,
                    int(segment.max_frequency[row]),
                    int(segment.min_length[row]),
                    k1=k1,
                    b=self._b,
                    avg_length=average,
                )
                bound = max(bound, term_bound)
            plans.append((self.document_frequency(term), idf, bound, lists))
        plans.sort(key=lambda plan: plan[0])  # rarest (shortest list, highest idf) first
        remaining = [*np.cumsum([plan[2] for plan in plans][::-1])[::-1].tolist(), 0.0]

        scores = np.zeros(len(self._keys), dtype=np.float64)
        read: list[np.ndarray] = []  # the posting lists read in full so far
        candidates: np.ndarray | None = None  # None: every passage can still enter
        for position, (_, idf, _, lists) in enumerate(plans):
            if candidates is None and position > 0:
                touched = self._touched(scores, read, visible)
                if len(touched) >= limit and remaining[position] < _kth(scores[touched], limit):
                    candidates = touched
            if candidates is not None:
                theta = _kth(scores[candidates], limit)
                candidates = candidates[scores[candidates] + remaining[position] >= theta]
            for slots, frequencies in lists:
                if candidates is None:
                    scores[slots] += idf * frequencies * (k1 + 1) / (frequencies + norms[slots])
                    read.append(slots)
                    continue
                at = np.searchsorted(slots, candidates)
                inside = at < len(slots)
                found = inside.copy()
                found[inside] = slots[at[inside]] == candidates[inside]
                found_tf = frequencies[at[found]]
                hit = candidates[found]
                scores[hit] += idf * found_tf * (k1 + 1) / (found_tf + norms[hit])
        if candidates is None:
            candidates = self._touched(scores, read, visible)
        if len(candidates) > limit:
            candidates = candidates[scores[candidates] >= _kth(scores[candidates], limit)]
        ranked = sorted(
            ((float(scores[slot]), self._keys[slot]) for slot in candidates.tolist()),
            key=lambda item: (-item[0], item[1]),
        )
        return [(key, score) for score, key in ranked[:limit]]

    def _touched(
        self, scores: np.ndarray, read: list[np.ndarray], visible: np.ndarray
    ) -> np.ndarray:
        """The visible live slots with a score so far (those in the lists read), ascending."""
        postings = sum(len(slots) for slots in read)
        if postings * 8 < len(scores):  # short lists: cheaper than scanning every slot
            touched = np.sort(np.concatenate(read)) if read else np.zeros(0, np.int64)
            if len(touched):
                touched = touched[np.append(True, touched[1:] != touched[:-1])]
        else:
            touched = np.flatnonzero(scores)
        return touched[visible[touched]]


def held_none_of(acl: str, held: Sequence[str]) -> bool:
    """Whether a key holding `held` may not see a document whose `acl` is this text."""
    return not any(group in held for group in acl.split(","))


def _kth(values: np.ndarray, k: int) -> float:
    """The k-th largest of `values` (the smallest when there are fewer)."""
    if len(values) <= k:
        return float(values.min())
    return float(-np.partition(-values, k - 1)[k - 1])
