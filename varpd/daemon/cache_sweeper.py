"""The daemon's one timer for every overlay's lookup cache, running only while one has something to expire.

A timer per overlay (one wake-up per overlay per second) made 1000 idle overlays wake the daemon
1000 times a second; push-mode overlays never even fill their cache.  Caches say when they get
something to sweep (`LookupCache.on_pending`); the sweeper ticks every CACHE_SWEEP_INTERVAL
while any cache still has something queued, and stops when all are empty.
"""

from __future__ import annotations

import asyncio
import weakref

from varpd.model.cache import CACHE_SWEEP_INTERVAL, LookupCache


class CacheSweeper:
    def __init__(self, interval: float = CACHE_SWEEP_INTERVAL) -> None:
        self.interval = interval
        self._active: set[LookupCache] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.ticks = 0

    def watch(self, cache: LookupCache) -> None:
        cache.on_pending = lambda: self._wake(cache)
        if cache.pending():
            self._wake(cache)

    def unwatch(self, cache: LookupCache) -> None:
        cache.on_pending = None
        self._active.discard(cache)
        if not self._active and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self, cache: LookupCache) -> None:
        self._active.add(cache)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.ticks += 1
        for cache in list(self._active):
            cache.sweep()
            if not cache.pending():
                self._active.discard(cache)
        if self._active:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)


_sweepers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CacheSweeper]" = weakref.WeakKeyDictionary()


def sweeper() -> CacheSweeper:
    """The running loop's sweeper (one per daemon)."""
    loop = asyncio.get_running_loop()
    found = _sweepers.get(loop)
    if found is None:
        found = _sweepers[loop] = CacheSweeper()
    return found
