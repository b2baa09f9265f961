"""Token buckets per key (a guest's source MAC): one flooding guest loses its own excess, the others keep theirs."""

from __future__ import annotations

import time
from typing import Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)


class KeyedTokenBucket(Generic[K]):
    """`rate` tokens per second up to `burst` per key; memory bounded by `max_keys` (full buckets are
    forgotten first: a key that has been quiet for burst/rate seconds is no different from a new one)."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_keys, self._clock = rate, burst, max_keys, clock
        self._buckets: dict[K, tuple[float, float]] = {}  # key -> (tokens, at)
        self.refused = 0

    def allow(self, key: K) -> bool:
        now = self._clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            self.refused += 1
            return False
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._sweep(now)
        self._buckets[key] = (tokens - 1, now)
        return True

    def _sweep(self, now: float) -> None:
        full = now - self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if v[1] > full}
        if len(self._buckets) >= self.max_keys:  # all busy (a spoofing storm): start over
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)
