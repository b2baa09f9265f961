"""Answer cache for on-demand resolution: TTLs, negative caching, per-key rate limit.

The kernel does not de-duplicate or rate-limit misses (every ARP retry is
another miss), so the daemon must: a key looked up less than `min_interval`
ago is not looked up again, and a negative answer is remembered for
`negative_ttl` so that a storm to an unknown destination costs nothing.
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
        self.hits = self.misses = self.negative_hits = self.rate_limited = 0

    def get(self, key: K) -> V | None | object:
        """The cached answer (None = known negative), or MISSING."""
        slot = self._slots.get(key)
        if slot is None:
            self.misses += 1
            return MISSING
        if slot.expires < self._clock():
            del self._slots[key]
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
        ttl = self.ttl if value is not None else self.negative_ttl
        self._slots[key] = _Slot(value, self._clock() + ttl)

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

    def _evict(self) -> None:
        """Drop expired slots, then the oldest tenth: memory stays bounded under a miss storm."""
        now = self._clock()
        for key in [k for k, s in self._slots.items() if s.expires < now]:
            del self._slots[key]
        if len(self._slots) >= self.max_entries:
            for key in list(self._slots)[: max(1, self.max_entries // 10)]:
                del self._slots[key]
