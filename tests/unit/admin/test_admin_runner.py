"""AdminServer on a real unix socket: stale socket replaced, mode 0660, optional TCP, clean stop."""
from __future__ import annotations

import os
import socket
import stat

import aiohttp

from fake_service import seeded
from varpd.admin.runner import AdminServer


async def test_unix_socket_lifecycle(tmp_path):
    path = tmp_path / "run" / "varpd.sock"
    path.parent.mkdir()
    path.write_text("stale")
    server = AdminServer(seeded(), str(path))
    await server.start()
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o660
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as s:
            async with s.get("http://varpd/v1/health") as resp:
                assert resp.status == 200 and (await resp.json())["overlays"] == 2
    finally:
        await server.stop()
    assert not path.exists()
    await server.stop()  # twice is fine


async def test_tcp_only_when_configured(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = AdminServer(seeded(), str(tmp_path / "s"), tcp=("127.0.0.1", port))
    await server.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/v1/overlays/vx23") as resp:
                assert resp.status == 200 and (await resp.json())["vni"] == 23
    finally:
        await server.stop()
