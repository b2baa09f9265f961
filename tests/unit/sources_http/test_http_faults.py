"""The http backend against a deliberately bad server: every failure is answered as "unknown",
bounded in time, logged once with the URL and the problem, and never blocks the loop."""
from __future__ import annotations

import asyncio
import logging
import time
import tracemalloc

import pytest
from aiohttp import web

from _waiting import LoopTicker
from test_http_support import MAC1, VNI, Served, free_port, make_backend, wait_until

GOOD = {"ip": "192.0.2.9", "port": 4789}
DEEP = "[" * 5000 + "]" * 5000


class Bad:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.sent = 0
        self.fail500 = True

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{mode}/v1/overlays/{vni}/macs/{mac}", self.handle)
        app.router.add_get("/{mode}/v1/overlays/{vni}/events", self.events)
        return app

    async def events(self, request):
        return web.Response(status=404)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        self.hits[mode] = self.hits.get(mode, 0) + 1
        if mode == "500":
            return web.Response(status=500) if self.fail500 else web.json_response(GOOD)
        if mode == "slow":
            await asyncio.sleep(10)
            return web.json_response(GOOD)
        if mode == "garbage":
            return web.Response(text="<html>not json", content_type="application/json")
        if mode == "port-x":
            return web.json_response({"ip": "192.0.2.9", "port": "x"})
        if mode == "no-ip":
            return web.json_response({"port": 4789})
        if mode == "list":
            return web.json_response([GOOD])
        if mode == "deep":  # 10 KiB, within the body cap, nested deeper than json's recursion limit
            return web.Response(text=DEEP, content_type="application/json")
        if mode in ("huge", "huge-chunked"):
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            if mode == "huge":
                resp.content_length = 10 * 1024 * 1024
            await resp.prepare(request)
            chunk = b" " * 65536
            try:
                for _ in range(160):
                    await resp.write(chunk)
                    self.sent += len(chunk)
            except (ConnectionError, RuntimeError):
                pass
            return resp
        return web.json_response(GOOD)


@pytest.fixture
async def bad():
    b = Bad()
    served = await Served(b.app).start()
    b.url = served.url
    yield b
    await served.stop()


async def _backend(url: str, **props):
    props.setdefault("events", "false")
    b = make_backend(url, **props)
    b.statuses = []
    b.add_status_listener(b.statuses.append)
    await b.start()
    return b


def _lines(caplog, *words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "varpd_plugins.http" and r.levelno >= logging.WARNING
            and all(w in r.getMessage() for w in words)]


@pytest.mark.parametrize("mode, problem", [
    ("garbage", "malformed JSON"),
    ("port-x", "field 'port'"),
    ("no-ip", "missing required field 'ip'"),
    ("list", "expected a JSON object"),
    ("deep", "nested too deeply"),
])
async def test_garbage_is_unknown_and_logged_once(bad, caplog, mode, problem):
    caplog.set_level(logging.WARNING)
    b = await _backend(f"{bad.url}/{mode}")
    try:
        assert await b.lookup(MAC1) is None
        url = f"{bad.url}/{mode}/v1/overlays/{VNI}/macs/{MAC1}"
        assert len(_lines(caplog, url, problem)) == 1, caplog.text
        assert bad.hits[mode] == 1  # a garbage answer is not retried
        assert b.degraded and problem in b.degraded
    finally:
        await b.stop()


async def test_500_is_retried_then_unknown_and_degraded_until_a_success(bad, caplog):
    caplog.set_level(logging.WARNING)
    b = await _backend(f"{bad.url}/500", retries="2", timeout="1")
    try:
        assert await b.lookup(MAC1) is None
        assert bad.hits["500"] == 3
        assert len(_lines(caplog, f"{bad.url}/500/v1/overlays", "HTTP 500", "after 3 attempts")) == 1, caplog.text
        assert b.degraded and "HTTP 500" in b.degraded and b.statuses == [b.degraded]
        # a storm of misses: while unreachable one attempt each, and no further log lines
        for _ in range(20):
            assert await b.lookup(MAC1) is None
        assert bad.hits["500"] == 3 + 20
        assert len(_lines(caplog, "HTTP 500")) == 1 and len(b.statuses) == 1  # degraded once
        bad.fail500 = False
        assert await b.lookup(MAC1) is not None
        assert b.degraded is None and b.statuses[-1] is None
    finally:
        await b.stop()


async def test_slow_server_times_out_without_blocking_the_loop(bad, caplog):
    caplog.set_level(logging.WARNING)
    b = await _backend(f"{bad.url}/slow", timeout="0.3", retries="1")
    try:
        async with LoopTicker(0.01) as ticker:
            t0 = time.monotonic()
            assert await b.lookup(MAC1) is None
            elapsed = time.monotonic() - t0
        assert 0.6 <= elapsed < 1.5, elapsed  # 2 attempts of 0.3 s + a short backoff
        assert ticker.ticks > elapsed / 0.01 * 0.5, (ticker.ticks, elapsed)  # the loop kept running meanwhile
        assert len(_lines(caplog, f"{bad.url}/slow/v1/overlays", "timeout")) == 1, caplog.text
        assert b.degraded and "timeout" in b.degraded
    finally:
        await b.stop()


@pytest.mark.parametrize("mode", ["huge", "huge-chunked"])
async def test_huge_body_is_refused_quickly(bad, caplog, mode):
    caplog.set_level(logging.WARNING)
    b = await _backend(f"{bad.url}/{mode}")
    tracemalloc.start()
    try:
        t0 = time.monotonic()
        assert await b.lookup(MAC1) is None
        elapsed = time.monotonic() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await b.stop()
    assert elapsed < 1.0, elapsed
    assert peak < 4 * 1024 * 1024, peak  # far below the 10 MB offered
    assert len(_lines(caplog, f"{bad.url}/{mode}/v1/overlays", "KiB cap")) == 1, caplog.text
    await asyncio.sleep(0.1)
    assert bad.sent < 10 * 1024 * 1024


async def test_connection_refused(caplog):
    caplog.set_level(logging.WARNING)
    url = f"http://127.0.0.1:{free_port()}"
    b = await _backend(url, retries="2")
    try:
        t0 = time.monotonic()
        assert await b.lookup(MAC1) is None
        assert time.monotonic() - t0 < 1.5
        assert len(_lines(caplog, f"{url}/v1/overlays/{VNI}/macs/{MAC1}", "connection failed")) == 1, caplog.text
        assert b.degraded and "connection failed" in b.degraded
    finally:
        await b.stop()


async def test_events_stream_failure_never_crashes(bad, caplog):
    """A server without an events stream: logged (rate-limited), retried with backoff, lookups unaffected."""
    caplog.set_level(logging.WARNING)
    b = make_backend(f"{bad.url}/ok")
    b.events_backoff = (0.01, 0.05)
    await b.start()
    try:
        assert await b.lookup(MAC1) is not None
        await asyncio.sleep(0.3)
        assert b.stats["events_disconnects"] >= 3
        assert len(_lines(caplog, "events-disconnected", "HTTP 404")) == 1, caplog.text
        assert b.degraded is None
    finally:
        await b.stop()


async def test_deeply_nested_event_is_a_bad_event_not_a_crash(caplog):
    """An events stream carrying JSON nested past the parser's recursion limit: the event is refused
    in one line and a resync started, with no traceback and no reconnection."""
    async def events(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"event: hello\nid: 1\ndata: {}\n\n")
        await resp.write(f"event: upsert\nid: 2\ndata: {DEEP}\n\n".encode())
        await asyncio.sleep(30)
        return resp

    def app():
        a = web.Application()
        a.router.add_get("/v1/overlays/{vni}/events", events)
        return a

    caplog.set_level(logging.INFO)
    served = await Served(app).start()
    b = make_backend(served.url)
    await b.start()
    try:
        await wait_until(lambda: b.stats["events_upsert"] >= 1, 5, "the deep event")
        await asyncio.sleep(0.2)
        assert len(_lines(caplog, "bad-event", "nested too deeply")) == 1, caplog.text
        assert not [r for r in caplog.records if r.exc_info], caplog.text
        assert b.stats["events_disconnects"] == 0 and b.stats["resyncs"] == 1
    finally:
        await b.stop()
        await served.stop()
