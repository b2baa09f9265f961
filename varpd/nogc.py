"""Automatic cyclic GC off while bulk work builds hundreds of thousands of objects.

None of those objects (parsed records, dumped kernel entries, plans) can form a cycle,
yet each collection of the oldest generation rescans every live one: with a million
records held, one pass of the collector stalls the event loop for a good part of a
second.  Nested and concurrent users (threads, several overlays' passes) share one
count: the collector comes back when the last one leaves, and only if it was on.
The count's lock is re-entrant: a collection can start inside it (any allocation) and run a
finalizer on the same thread, such as a discarded coroutine suspended in `collector_paused()`,
whose exit takes the lock again; a plain Lock deadlocked that thread, and the event loop after it.
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Iterator

_lock = threading.RLock()
_depth = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
