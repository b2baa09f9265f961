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


async def test_a_task_spawned_while_cancel_all_waits_is_cancelled_too():
    """Kernel events keep coming while an overlay stops (drift repair and the ENOBUFS resync spawn
    from the neighbour socket's callback): a task spawned meanwhile used to be dropped from the set
    uncancelled and went on programming after the stop (seen: a repair and a pass logged after
    SIGTERM)."""
    tasks = TaskSet()
    late: list[asyncio.Task] = []

    async def slow_to_stop():
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.01)  # its cleanup awaits: an event comes in meanwhile
            late.append(tasks.spawn(asyncio.sleep(3600)))

    tasks.spawn(slow_to_stop())
    await asyncio.sleep(0)
    await tasks.cancel_all()
    assert late and late[0].cancelled() and len(tasks) == 0
