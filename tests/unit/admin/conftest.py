from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fake_service import service, sock_dir  # noqa: F401  (fixtures shared with tests/unit/cli)
from varpd.admin.app import make_app


@pytest.fixture
async def client(service):  # noqa: F811
    async with TestClient(TestServer(make_app(service))) as c:
        yield c


@pytest.fixture
async def daemon_socket(service, sock_dir):  # noqa: F811
    """A real AdminServer on a unix socket; `await request(method, path, **kwargs)` -> (status, JSON)."""
    import aiohttp

    from varpd.admin.runner import AdminServer

    server = AdminServer(service, str(sock_dir / "varpd.sock"))
    await server.start()
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock_dir / "varpd.sock")))

    async def request(method: str, path: str, **kwargs):
        async with session.request(method, f"http://varpd{path}", **kwargs) as resp:
            return resp.status, await resp.json()

    try:
        yield request
    finally:
        await session.close()
        await server.stop()
