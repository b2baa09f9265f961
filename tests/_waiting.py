"""Async test helpers every unit suite shares: `wait_until` a condition, `LoopTicker` to prove the
event loop was not blocked."""
from __future__ import annotations

import asyncio
import time


async def wait_until(pred, timeout: float = 5.0, what: str = "condition", interval: float = 0.01):
    """Return pred()'s first truthy value; fail naming `what` (and the last value) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        await asyncio.sleep(interval)


class LoopTicker:
    """Counts the wake-ups of a task sleeping `interval` s while the block runs: proof that the
    event loop kept running (work was off the loop or awaited), not a timing measurement."""

    def __init__(self, interval: float) -> None:
        self.interval, self.ticks = interval, 0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.ticks += 1

    async def __aenter__(self) -> "LoopTicker":
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
