"""AdminServer (varpd.admin.runner) on a real unix socket."""
from __future__ import annotations

import os
import socket
import stat

import aiohttp

from varpd.admin.runner import AdminServer


async def _get(path, url: str):
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as s:
        async with s.get(f"http://varpd{url}") as resp:
            return resp.status, await resp.json()


def _leave_stale_socket(path) -> None:
    """What a daemon killed with -9 leaves: a socket file nobody listens on."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        raise AssertionError("the stale socket should refuse connections")
    except ConnectionRefusedError:
        pass
    finally:
        probe.close()


async def test_start_replaces_stale_socket_serves_and_stop_removes_it(fake, short_dir):
    path = short_dir / "varpd.sock"
    _leave_stale_socket(path)
    server = AdminServer(fake, str(path))
    await server.start()
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        status, body = await _get(path, "/v1/health")
        assert status == 200 and body["overlays"] == 2 and body["degraded"] == ["vx42"]
        status, body = await _get(path, "/v1/overlays/nope")
        assert status == 404 and body == {"error": "overlay 'nope' not found"}
    finally:
        await server.stop()
    assert not path.exists()


async def test_start_replaces_a_leftover_regular_file(fake, short_dir):
    path = short_dir / "varpd.sock"
    path.write_text("left over")
    server = AdminServer(fake, str(path))
    await server.start()
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert (await _get(path, "/v1/health"))[0] == 200
    finally:
        await server.stop()
    assert not path.exists()


async def test_start_creates_the_socket_directory(fake, short_dir):
    path = short_dir / "run" / "varpd" / "s"
    server = AdminServer(fake, str(path))
    await server.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert (await _get(path, "/v1/overlays"))[0] == 200
    finally:
        await server.stop()
    assert not path.exists()
    for d in (path.parent, path.parent.parent):
        d.rmdir()


async def test_stop_is_idempotent_and_safe_before_start(fake, short_dir):
    path = short_dir / "varpd.sock"
    server = AdminServer(fake, str(path))
    await server.stop()  # never started: nothing to do, no error
    await server.start()
    await server.stop()
    await server.stop()
    assert not path.exists()
