"""The files backend and hostile files (issue #12, item 5): a FIFO renamed over hosts.json blocked the
reload thread forever (the overlay stayed ONLINE, later edits were ignored, stop() hung; seven such
overlays took every worker thread from the other files overlays); /dev/zero was read until the OOM
killer.  Each is now refused in one line naming the file, the last good mapping stays in force."""
from __future__ import annotations

import asyncio
import os

from _memcap import run_capped
from _waiting import wait_until
from test_files_backend import SEED, _edited, make, rename_over

from varpd.backend.errors import ConfigError

import pytest


def fifo_over(path) -> None:
    tmp = path.with_name(path.name + ".fifo")
    os.mkfifo(tmp)
    os.replace(tmp, path)


def unblock(path) -> None:
    """Should a regression leave a thread reading the FIFO, give it end of file (a test fails, never hangs)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader: nothing blocked


async def test_fifo_at_start_is_refused_at_once(tmp_path):
    path = tmp_path / "hosts.json"
    os.mkfifo(path)
    try:
        with pytest.raises(ConfigError) as info:
            async with asyncio.timeout(10):
                await make(path).start()
    finally:
        unblock(path)
    assert str(info.value) == f"{path}: not a regular file but a FIFO, device or socket"


def test_dev_zero_is_refused_at_once():
    """In a child capped at 1 GiB: today's main reads /dev/zero until the cap (or the OOM killer)."""
    result = run_capped("""
        import asyncio, json
        from varpd.backend.conformance import CONTEXT
        from varpd.backend.errors import ConfigError
        from varpd.backend.properties import resolve
        from varpd_plugins.files import FilesBackend
        b = FilesBackend(CONTEXT, resolve(FilesBackend.properties, {"files/config": "/dev/zero"}))
        try:
            asyncio.run(b.start())
            error = None
        except ConfigError as exc:
            error = str(exc)
        print(json.dumps({"error": error}))
    """, timeout=60)
    assert result["error"] == "/dev/zero: not a regular file but a FIFO, device or socket"


async def test_size_limit_property(tmp_path):
    path = tmp_path / "hosts.json"
    rename_over(path, SEED)
    with pytest.raises(ConfigError, match=f"^{path}: .* is larger than the limit of 100 bytes$"):
        await make(path, **{"files/max_size": "100"}).start()
    b = make(path, **{"files/max_size": "100000"})
    await b.start()
    await b.stop()


async def test_fifo_renamed_over_degrades_then_an_edit_recovers_and_stop_returns(tmp_path):
    path = tmp_path / "hosts.json"
    rename_over(path, SEED)
    b = make(path)
    await b.start()
    try:
        fifo_over(path)
        await wait_until(lambda: b.degraded, timeout=5, what="DEGRADED")
        assert b.degraded.startswith(f"{path}: not a regular file") and "keeping the last good mapping" in b.degraded
        assert len(b.mapping) == 3
        rename_over(path, _edited())  # a later edit is seen
        await wait_until(lambda: b.degraded is None, timeout=5, what="DEGRADED cleared")
        assert "de:ad:be:ef:00:03" in b.mapping.by_mac
    finally:
        unblock(path)
        async with asyncio.timeout(5):
            await b.stop()


async def test_seven_fifo_overlays_do_not_starve_another_files_overlay(tmp_path):
    backends = []
    for i in range(8):
        path = tmp_path / f"hosts{i}.json"
        rename_over(path, SEED)
        backends.append(make(path))
    try:
        for b in backends:
            await b.start()
        for b in backends[:7]:
            fifo_over(b.path)
        await wait_until(lambda: all(b.degraded for b in backends[:7]), timeout=10, what="seven DEGRADED")
        healthy = backends[7]
        rename_over(healthy.path, _edited())
        await wait_until(lambda: "de:ad:be:ef:00:03" in healthy.mapping.by_mac, timeout=10,
                         what="the eighth overlay's edit")
        assert healthy.degraded is None
    finally:
        for b in backends:
            unblock(b.path)
        async with asyncio.timeout(10):
            for b in backends:
                await b.stop()
