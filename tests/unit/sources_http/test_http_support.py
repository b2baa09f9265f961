"""Shared helpers of the http backend tests (no tests here): in-process servers on loopback."""
from __future__ import annotations

import socket
from ipaddress import IPv4Address

from aiohttp import web

from varpd.backend.base import OverlayContext
from varpd.backend.properties import resolve
from varpd.model import Destination, Mapping, MappingRecord
from varpd_plugins.http import HttpBackend

from _waiting import wait_until  # noqa: F401  (the suites import it from here)

VNI = 23
MAC1, MAC2, MAC3 = "de:ad:be:ef:00:00", "de:ad:be:ef:00:01", "de:ad:be:ef:00:02"


def seed_mapping() -> Mapping:
    from ipaddress import ip_address as ip
    return Mapping.of([
        MappingRecord(MAC1, Destination(ip("192.0.2.1"), 4789), ip("10.55.55.2"), ip("fe80::3")),
        MappingRecord(MAC2, Destination(ip("192.0.2.2"), 4789), ip("10.55.55.3"), ip("fe80::4"), MAC1),
        MappingRecord(MAC3, Destination(ip("2001:db8::3"), 4790), ip("10.55.55.4"), None),
    ])


class Served:
    """An aiohttp app on 127.0.0.1; stop() and start() again keep the port (a server restart)."""

    def __init__(self, make_app, port: int = 0) -> None:
        self.make_app = make_app
        self.port = port
        self.runner: web.AppRunner | None = None

    async def start(self) -> "Served":
        self.runner = web.AppRunner(self.make_app(), shutdown_timeout=1.0, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_backend(url: str, **props) -> HttpBackend:
    given = {"http/url": url, **{k if "/" in k else f"http/{k}": v for k, v in props.items()}}
    values = resolve(HttpBackend.properties, given)
    return HttpBackend(OverlayContext("vx23", VNI, IPv4Address("192.0.2.100"), 4789), values)
