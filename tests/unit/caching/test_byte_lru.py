"""The byte-bounded LRU under the caches: bound, order, expiry and counts."""

from __future__ import annotations

from ragmeshd.caching.lru import ENTRY_OVERHEAD_BYTES, ByteLRU


def entry_cost(key: bytes, value: bytes) -> int:
    return len(key) + len(value) + ENTRY_OVERHEAD_BYTES


def test_least_recently_used_leaves_first_and_bytes_stay_bounded() -> None:
    bound = 3 * entry_cost(b"k0", b"x" * 100)
    cache: ByteLRU[bytes] = ByteLRU("test_lru", bound, len)
    for i in range(3):
        cache.put(f"k{i}".encode(), b"x" * 100)
    assert cache.get(b"k0") == b"x" * 100  # k0 is now the most recently used
    cache.put(b"k3", b"x" * 100)
    assert cache.get(b"k1") is None  # the least recently used went
    assert cache.get(b"k0") is not None and cache.get(b"k3") is not None
    assert cache.bytes == bound and len(cache) == 3
    assert cache.stats.evictions == 1
    assert (cache.stats.hits, cache.stats.misses) == (3, 1)


def test_a_value_larger_than_the_bound_is_not_kept() -> None:
    cache: ByteLRU[bytes] = ByteLRU("test_lru", 500, len)
    cache.put(b"small", b"x" * 10)
    cache.put(b"huge", b"x" * 1000)
    assert cache.get(b"huge") is None
    assert cache.get(b"small") == b"x" * 10


def test_replacing_a_key_does_not_count_its_bytes_twice() -> None:
    cache: ByteLRU[bytes] = ByteLRU("test_lru", 10_000, len)
    cache.put(b"k", b"x" * 100)
    cache.put(b"k", b"y" * 50)
    assert cache.bytes == entry_cost(b"k", b"y" * 50)
    assert cache.get(b"k") == b"y" * 50


def test_entries_expire_after_their_ttl() -> None:
    now = [100.0]
    cache: ByteLRU[bytes] = ByteLRU("test_lru", 10_000, len, clock=lambda: now[0])
    cache.put(b"k", b"v", ttl_s=5)
    now[0] = 104.9
    assert cache.get(b"k") == b"v"
    now[0] = 105.0
    assert cache.get(b"k") is None
    assert cache.bytes == 0


def test_discard_where_removes_matching_keys_only() -> None:
    cache: ByteLRU[bytes] = ByteLRU("test_lru", 10_000, len)
    for key in (b"a/1", b"a/2", b"b/1"):
        cache.put(key, b"v")
    assert cache.discard_where(lambda key: key.startswith(b"a/")) == 2
    assert cache.get(b"b/1") == b"v" and cache.get(b"a/1") is None
