from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fake_service import service, sock_dir  # noqa: F401  (fixtures shared with tests/unit/cli)
from varpd.admin.app import make_app


@pytest.fixture
async def client(service):  # noqa: F811
    async with TestClient(TestServer(make_app(service))) as c:
        yield c
