"""One INFO line per interval for an overlay's mapping changes, with counts, instead of one per change.

A backend that streams changes (an http events stream, an etcd watch, a busy svp shootdown
log) can deliver thousands a second; a line each buried everything else (27.9k lines in
20 s).  The first change after a quiet interval is logged at once, so a lone edit still
shows when it happened; changes arriving within `interval` of that line are counted and
written as one summary line when the interval ends.
"""

from __future__ import annotations

import asyncio
import logging
import time

from varpd.model import MappingChange


class ChangeLog:
    def __init__(self, logger: logging.Logger, overlay: str, interval: float = 10.0, clock=time.monotonic) -> None:
        self.logger = logger
        self.overlay = overlay
        self.interval = interval
        self.clock = clock
        self._last: float | None = None  # when the last line was written
        self._timer: asyncio.TimerHandle | None = None
        self._changes = self._upserted = self._removed = 0

    def add(self, change: MappingChange) -> None:
        self._changes += 1
        self._upserted += len(change.upserted)
        self._removed += len(change.removed)
        if self._last is None or self.clock() - self._last >= self.interval:
            self.flush()
        elif self._timer is None:
            delay = max(0.0, self.interval - (self.clock() - self._last))
            self._timer = asyncio.get_running_loop().call_later(delay, self.flush)

    def flush(self) -> None:
        """Write what was counted since the last line (nothing if nothing was)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._changes:
            return
        if self._changes == 1:
            self.logger.info("overlay=%s event=mapping-change upserted=%d removed=%d", self.overlay,
                             self._upserted, self._removed)
        else:
            self.logger.info("overlay=%s event=mapping-change changes=%d upserted=%d removed=%d (within %gs)",
                             self.overlay, self._changes, self._upserted, self._removed, self.interval)
        self._last = self.clock()
        self._changes = self._upserted = self._removed = 0

    def close(self) -> None:
        self.flush()
