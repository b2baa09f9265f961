"""AdminServer (varpd.admin.runner) on a real unix socket: a stale socket or leftover file replaced,
the directory created, mode 0660, optional TCP, clean and idempotent stop."""
from __future__ import annotations

import os
import socket
import stat

import aiohttp
import pytest

from varpd.admin.runner import AdminServer
from varpd.daemon.errors import SocketInUse


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


async def test_a_regular_file_at_the_socket_path_is_refused_and_kept(service, sock_dir):
    path = sock_dir / "run" / "varpd.sock"
    path.parent.mkdir()
    path.write_text("an operator's file")
    server = AdminServer(service, str(path))
    with pytest.raises(SocketInUse, match=r"varpd.sock exists and is not a socket: not replacing it"):
        await server.start()
    await server.stop()
    assert path.read_text() == "an operator's file"


async def test_a_socket_a_live_daemon_serves_is_refused_and_survives_the_second_servers_exit(service, sock_dir):
    path = sock_dir / "varpd.sock"
    first = AdminServer(service, str(path))
    await first.start()
    try:
        second = AdminServer(service, str(path))
        with pytest.raises(SocketInUse, match="in use by another running varpd"):
            await second.start()
        await second.stop()
        assert (await _get(path, "/v1/overlays"))[0] == 200, "the first server's socket must be untouched"
    finally:
        await first.stop()
    assert not path.exists()


async def test_stop_never_unlinks_a_socket_another_process_bound_since(service, sock_dir):
    path = sock_dir / "varpd.sock"
    server = AdminServer(service, str(path))
    await server.start()
    path.unlink()  # someone replaced our socket file with theirs
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        other.bind(str(path))
        await server.stop()
        assert stat.S_ISSOCK(os.lstat(path).st_mode), "stop() removed a socket it did not bind"
    finally:
        other.close()
        path.unlink(missing_ok=True)


async def test_start_replaces_stale_socket_serves_and_stop_removes_it(service, sock_dir):
    path = sock_dir / "varpd.sock"
    _leave_stale_socket(path)
    server = AdminServer(service, str(path))
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


async def test_start_creates_the_socket_directory(service, sock_dir):
    path = sock_dir / "run" / "varpd" / "s"
    server = AdminServer(service, str(path))
    await server.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert (await _get(path, "/v1/overlays"))[0] == 200
    finally:
        await server.stop()
    assert not path.exists()
    for d in (path.parent, path.parent.parent):
        d.rmdir()  # and nothing else was left in them


async def test_stop_is_idempotent_and_safe_before_start(service, sock_dir):
    path = sock_dir / "varpd.sock"
    server = AdminServer(service, str(path))
    await server.stop()  # never started: nothing to do, no error
    await server.start()
    await server.stop()
    await server.stop()
    assert not path.exists()


async def test_tcp_only_when_configured(service, sock_dir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = AdminServer(service, str(sock_dir / "s"), tcp=("127.0.0.1", port))
    await server.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/v1/overlays/vx23") as resp:
                assert resp.status == 200 and (await resp.json())["vni"] == 23
    finally:
        await server.stop()
