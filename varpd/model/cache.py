"""Answer cache for on-demand resolution: TTLs, negative caching, per-key rate limit.

The kernel does not de-duplicate or rate-limit misses (every ARP retry is
another miss), so the daemon must: a key looked up less than `min_interval`
ago is not looked up again, and a negative answer is remembered for
`negative_ttl` so that a storm to an unknown destination costs nothing.
The counters and `entry`/`stats` exist for the admin API (`GET .../cache`, `.../lookup`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MISSING = object()


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
        self._slots: dict[K, _Slot[V]] = {}
        self._last_lookup: dict[K, float] = {}
        self._next_sweep = clock() + max(negative_ttl, 1.0)
        self.hits = self.misses = self.negative_hits = self.rate_limited = 0
        self.evictions = 0  # live entries dropped to stay under max_entries
        self.expirations = 0  # entries dropped because their TTL ran out

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
        if self._clock() >= self._next_sweep:
            self._sweep()
        if len(self._slots) >= self.max_entries and key not in self._slots:
            self._evict()
        ttl = self.ttl if value is not None else self.negative_ttl
        now = self._clock()
        self._slots[key] = _Slot(value, now + ttl, now)

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
        self._last_lookup[key] = now
        return True

    def invalidate(self, key: K) -> None:
        self._slots.pop(key, None)
        self._last_lookup.pop(key, None)

    def clear(self) -> None:
        self._slots.clear()
        self._last_lookup.clear()

    def __len__(self) -> int:
        return len(self._slots)

    def _sweep(self) -> None:
        """Every negative_ttl, drop expired answers and stale rate-limit stamps (both would be ignored
        anyway): under a storm of unique destinations memory follows the rate, not the storm's length."""
        now = self._clock()
        self._next_sweep = now + max(self.negative_ttl, 1.0)
        expired = [k for k, s in self._slots.items() if s.expires < now]
        for key in expired:
            del self._slots[key]
        self.expirations += len(expired)
        for key in [k for k, t in self._last_lookup.items() if now - t >= self.min_interval]:
            del self._last_lookup[key]

    def _evict(self) -> None:
        """Drop expired slots, then the oldest tenth: memory stays bounded under a miss storm."""
        now = self._clock()
        expired = [k for k, s in self._slots.items() if s.expires < now]
        for key in expired:
            del self._slots[key]
        self.expirations += len(expired)
        if len(self._slots) >= self.max_entries:
            oldest = list(self._slots)[: max(1, self.max_entries // 10)]
            for key in oldest:
                del self._slots[key]
            self.evictions += len(oldest)
