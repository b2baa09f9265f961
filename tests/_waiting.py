"""Polling for a condition in async tests: the one `wait_until` every unit suite shares."""
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
