"""LookupCache's counters and observer views (admin API GET .../cache and .../lookup)."""
from __future__ import annotations

from varpd.model.cache import LookupCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_stats_count_entries_hits_misses_expirations_and_rate_limits():
    clock = Clock()
    c = LookupCache(ttl=10, negative_ttl=2, min_interval=0.5, clock=clock)
    c.put("a", "dest")
    c.put("b", None)
    c.get("a"), c.get("b"), c.get("zz")
    c.allow_lookup("x"), c.allow_lookup("x")
    s = c.stats()
    assert (s["entries"], s["positive"], s["negative"]) == (2, 1, 1)
    assert (s["hits"], s["negative_hits"], s["misses"], s["rate_limited"]) == (1, 1, 1, 1)
    assert (s["ttl"], s["negative_ttl"], s["min_interval"]) == (10, 2, 0.5)
    clock.now += 3
    assert c.stats()["negative"] == 0  # expired entries are not counted as live
    c.get("b")
    assert c.stats()["expirations"] == 1 and c.stats()["misses"] == 2


def test_entry_is_an_uncounted_look_with_age_and_remaining_ttl():
    clock = Clock()
    c = LookupCache(ttl=10, negative_ttl=2, min_interval=0, clock=clock)
    c.put("a", "dest")
    clock.now += 4
    e = c.entry("a")
    assert e.value == "dest" and not e.negative and e.age == 4 and e.remaining == 6
    assert c.entry("nope") is None
    assert c.hits == c.misses == 0
    clock.now += 7
    assert c.entry("a") is None


def test_evictions_count_live_entries_dropped_for_size():
    clock = Clock()
    c = LookupCache(ttl=10, negative_ttl=2, min_interval=0, max_entries=10, clock=clock)
    for i in range(10):
        c.put(i, "d")
    c.put("new", "d")
    assert c.evictions == 1 and len(c) == 10
    c.put("neg", None)  # full again: one more eviction
    clock.now += 3
    assert c.stats()["evictions"] == 2
