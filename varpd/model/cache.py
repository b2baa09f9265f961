"""Answer cache for on-demand resolution: TTLs, negative caching, per-key rate limit.

The kernel does not de-duplicate or rate-limit misses (every ARP retry is
another miss), so the daemon must: a key looked up less than `min_interval`
ago is not looked up again, and a negative answer is remembered for
`negative_ttl` so that a storm to an unknown destination costs nothing.
The counters and `entry`/`stats` exist for the admin API (`GET .../cache`, `.../lookup`).

Expired answers are dropped by `sweep()`, which the daemon's one sweeper
(varpd.daemon.cache_sweeper) calls every second while anything waits to expire (a lookup only
drops the one it finds expired): without it `/metrics` counted 49,520 entries for a cache
holding 4.  An empty cache (every push-mode overlay's) costs no timer at all: `on_pending` tells
the sweeper when a cache gets something to sweep.  Each TTL is the same for every answer of its kind, so answers expire in the order
they were stored: the sweep pops them off the front of a queue per kind, touching only what
expired, never scanning the cache.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MISSING = object()
CACHE_SWEEP_INTERVAL = 1.0  # s between two sweep() calls of a cache with something to expire


@dataclass(slots=True)
class _Slot(Generic[V]):
    value: V | None
    expires: float
    stored: float


@dataclass(frozen=True, slots=True)
class CachedAnswer(Generic[V]):
    """One live cache entry as the admin API shows it: the answer (None = negative) and its clock."""

    value: V | None
    age: float
    remaining: float

    @property
    def negative(self) -> bool:
        return self.value is None


class LookupCache(Generic[K, V]):
    def __init__(
        self,
        ttl: float,
        negative_ttl: float,
        min_interval: float,
        max_entries: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.min_interval = min_interval
        self.max_entries = max_entries
        self._clock = clock
        self._slots: dict[K, _Slot[V]] = {}  # in the order the answers were stored
        self._last_lookup: dict[K, float] = {}
        # (expires, key) in expiry order, for positive and for negative answers; an item whose
        # key was stored again, invalidated or evicted since is stale and skipped when popped
        self._expiry: tuple[deque[tuple[float, K]], deque[tuple[float, K]]] = (deque(), deque())
        self._stamps: deque[tuple[float, K]] = deque()  # (time, key) of _last_lookup, in time order
        self.hits = self.misses = self.negative_hits = self.rate_limited = 0
        self.evictions = 0  # live entries dropped to stay under max_entries
        self.expirations = 0  # entries dropped because their TTL ran out
        self.on_pending: Callable[[], None] | None = None  # called when an empty cache gets something to sweep

    def get(self, key: K) -> V | None | object:
        """The cached answer (None = known negative), or MISSING."""
        slot = self._slots.get(key)
        if slot is None:
            self.misses += 1
            return MISSING
        if slot.expires < self._clock():
            del self._slots[key]
            self.expirations += 1
            self.misses += 1
            return MISSING
        if slot.value is None:
            self.negative_hits += 1
        else:
            self.hits += 1
        return slot.value

    def put(self, key: K, value: V | None) -> None:
        if len(self._slots) >= self.max_entries and key not in self._slots:
            self._evict()
        negative = value is None
        now = self._clock()
        expires = now + (self.negative_ttl if negative else self.ttl)
        self._slots.pop(key, None)  # stored again: it moves to the end, the storage order holds
        self._slots[key] = _Slot(value, expires, now)
        queue = self._expiry[negative]
        if not queue and self.on_pending is not None:
            self.on_pending()
        queue.append((expires, key))
        if len(queue) > 2 * self.max_entries:  # keys stored again and again within a TTL
            self._rebuild_expiry()

    def entry(self, key: K) -> CachedAnswer[V] | None:
        """The live entry for `key`, without counting a hit or miss (an observer's look)."""
        slot = self._slots.get(key)
        now = self._clock()
        if slot is None or slot.expires < now:
            return None
        return CachedAnswer(slot.value, now - slot.stored, slot.expires - now)

    def stats(self) -> dict[str, int | float]:
        """Counters, live entries by kind and the TTLs; O(entries), meant for the admin API."""
        now = self._clock()
        positive = negative = 0
        for slot in self._slots.values():
            if slot.expires >= now:
                if slot.value is None:
                    negative += 1
                else:
                    positive += 1
        return {"entries": positive + negative, "positive": positive, "negative": negative,
                "hits": self.hits, "negative_hits": self.negative_hits, "misses": self.misses,
                "evictions": self.evictions, "expirations": self.expirations,
                "rate_limited": self.rate_limited, "ttl": self.ttl, "negative_ttl": self.negative_ttl,
                "min_interval": self.min_interval, "max_entries": self.max_entries}

    def allow_lookup(self, key: K) -> bool:
        """True if `key` may be looked up now; counts refusals."""
        now = self._clock()
        last = self._last_lookup.get(key)
        if last is not None and now - last < self.min_interval:
            self.rate_limited += 1
            return False
        if len(self._last_lookup) >= self.max_entries:
            self._last_lookup.clear()
            self._stamps.clear()
        self._last_lookup[key] = now
        if not self._stamps and self.on_pending is not None:
            self.on_pending()
        self._stamps.append((now, key))
        return True

    def invalidate(self, key: K) -> None:
        self._slots.pop(key, None)
        self._last_lookup.pop(key, None)

    def clear(self) -> None:
        self._slots.clear()
        self._last_lookup.clear()
        for queue in (*self._expiry, self._stamps):
            queue.clear()

    def __len__(self) -> int:
        return len(self._slots)

    def pending(self) -> bool:
        """Whether a sweep() may still have something to drop (an answer or a stamp queued)."""
        return bool(self._expiry[0] or self._expiry[1] or self._stamps)

    def sweep(self) -> int:
        """Drop the expired answers and the rate-limit stamps older than min_interval (both would
        be ignored anyway), oldest first; costs what expired, not the cache's size.  Returns how
        many answers were dropped."""
        now = self._clock()
        dropped = 0
        for queue in self._expiry:
            while queue and queue[0][0] < now:
                expires, key = queue.popleft()
                slot = self._slots.get(key)
                if slot is not None and slot.expires == expires:
                    del self._slots[key]
                    dropped += 1
        self.expirations += dropped
        stamps = self._stamps
        while stamps and now - stamps[0][0] >= self.min_interval:
            stamp, key = stamps.popleft()
            if self._last_lookup.get(key) == stamp:
                del self._last_lookup[key]
        return dropped

    def _rebuild_expiry(self) -> None:
        """The expiry queues from the live slots alone, dropping their stale items (rare: only when
        a queue outgrows twice max_entries)."""
        for negative, queue in enumerate(self._expiry):
            live = sorted(((s.expires, k) for k, s in self._slots.items() if (s.value is None) == bool(negative)),
                          key=lambda item: item[0])  # (keys of different types do not compare)
            queue.clear()
            queue.extend(live)

    def _evict(self) -> None:
        """Drop expired answers, then the oldest stored tenth: memory stays bounded under a miss storm."""
        self.sweep()
        if len(self._slots) >= self.max_entries:
            oldest = list(itertools.islice(self._slots, max(1, self.max_entries // 10)))
            for key in oldest:
                del self._slots[key]
            self.evictions += len(oldest)
