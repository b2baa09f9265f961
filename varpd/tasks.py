"""Background tasks an object owns: held until they finish, cancelled and awaited together on stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine


class TaskSet:
    """The event loop keeps only weak references to tasks, so their owner must hold them; this
    holds each until it ends (then reports a failure, if asked) and cancels what is left on stop."""

    def __init__(self, on_failure: Callable[[BaseException], None] | None = None) -> None:
        self._tasks: set[asyncio.Task] = set()
        self._on_failure = on_failure

    def spawn(self, coro: Coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if self._on_failure is not None and not task.cancelled() and task.exception() is not None:
            self._on_failure(task.exception())

    async def cancel_all(self) -> None:
        """Cancel every task still running and return once all have ended, those spawned while
        waiting included (an event callback can spawn one then): none outlives the call."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)

    def __len__(self) -> int:
        return len(self._tasks)
