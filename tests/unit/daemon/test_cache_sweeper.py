"""One sweeper for every overlay's cache: it ticks only while a cache holds something to expire,
so a thousand idle (push-mode, empty-cache) overlays cost no wake-up at all."""
from __future__ import annotations

import asyncio

from _waiting import wait_until

from varpd.daemon.cache_sweeper import CacheSweeper
from varpd.model.cache import LookupCache


async def test_empty_caches_cost_no_timer():
    s = CacheSweeper(interval=0.01)
    caches = [LookupCache(ttl=1, negative_ttl=1, min_interval=0) for _ in range(1000)]
    for c in caches:
        s.watch(c)
    await asyncio.sleep(0.1)
    assert s.ticks == 0 and s._timer is None


async def test_ticks_while_something_expires_then_stops():
    s = CacheSweeper(interval=0.01)
    a, b = (LookupCache(ttl=0.03, negative_ttl=0.03, min_interval=0.02) for _ in range(2))
    s.watch(a)
    s.watch(b)
    a.put("02:00:00:00:00:01", None)
    assert b.allow_lookup("02:00:00:00:00:02")  # a rate-limit stamp is something to sweep too
    await wait_until(lambda: len(a) == 0 and not a.pending() and not b.pending(), timeout=2, what="swept")
    await wait_until(lambda: s._timer is None, timeout=2, what="the timer stopped")
    ticks = s.ticks
    await asyncio.sleep(0.05)
    assert s.ticks == ticks and a.expirations == 1
    a.put("02:00:00:00:00:03", "x")  # filled again: the timer comes back
    assert s._timer is not None


async def test_unwatched_cache_is_forgotten():
    s = CacheSweeper(interval=0.01)
    c = LookupCache(ttl=10, negative_ttl=10, min_interval=0)
    s.watch(c)
    c.put("k", None)
    s.unwatch(c)
    assert s._timer is None and c.on_pending is None
    c.put("j", None)
    assert s._timer is None
