from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fake_service import FakeService, seeded
from varpd.admin.app import make_app


@pytest.fixture
def service() -> FakeService:
    return seeded()


@pytest.fixture
async def client(service):
    async with TestClient(TestServer(make_app(service))) as c:
        yield c
