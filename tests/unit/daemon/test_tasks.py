"""TaskSet: the background tasks of the daemon, its overlays and the svp/http backends."""
from __future__ import annotations

import asyncio

from varpd.tasks import TaskSet


async def test_a_task_is_held_until_it_ends_and_a_failure_is_reported():
    failures: list[BaseException] = []
    tasks = TaskSet(on_failure=failures.append)
    gate = asyncio.Event()

    async def fail():
        await gate.wait()
        raise RuntimeError("boom")

    tasks.spawn(fail())
    assert len(tasks) == 1
    gate.set()
    await asyncio.sleep(0.01)
    assert len(tasks) == 0
    assert [str(e) for e in failures] == ["boom"]


async def test_cancel_all_cancels_and_waits_for_every_task_and_reports_no_failure():
    failures: list[BaseException] = []
    tasks = TaskSet(on_failure=failures.append)
    ended = []

    async def forever(i):
        try:
            await asyncio.sleep(3600)
        finally:
            ended.append(i)

    spawned = [tasks.spawn(forever(i)) for i in range(3)]
    await asyncio.sleep(0)
    await tasks.cancel_all()
    assert sorted(ended) == [0, 1, 2] and all(t.cancelled() for t in spawned)
    assert len(tasks) == 0 and failures == []
