"""Shared helpers of the svp unit tests (no tests here)."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from varpd.backend.base import OverlayContext
from varpd.backend.properties import resolve
from varpd.model import Destination, Mapping, MappingRecord
from varpd.svp_server import SvpServer
from varpd_plugins.svp.backend import SvpBackend

from _waiting import wait_until  # noqa: F401  (the suites import it from here)

VNI = 23
MAC1, MAC2, MAC3 = "de:ad:be:ef:00:00", "de:ad:be:ef:00:01", "de:ad:be:ef:00:02"


def seed_mapping(port2: int = 4789) -> Mapping:
    return Mapping.of([
        MappingRecord(MAC1, Destination(IPv4Address("192.0.2.1"), 4789), IPv4Address("10.55.55.2"),
                      IPv6Address("fe80::3")),
        MappingRecord(MAC2, Destination(IPv4Address("192.0.2.2"), port2), IPv4Address("10.55.55.3"),
                      IPv6Address("fe80::4")),
        MappingRecord(MAC3, Destination(IPv4Address("192.0.2.3"), 4789), IPv4Address("10.55.55.4"),
                      IPv6Address("fe80::5")),
    ])


def hosts_json(port2: int = 4789, mac3_arp: bool = True) -> dict:
    return {
        MAC1: {"ip": "192.0.2.1", "port": 4789, "arp": "10.55.55.2", "ndp": "fe80::3"},
        MAC2: {"ip": "192.0.2.2", "port": port2, "arp": "10.55.55.3", "ndp": "fe80::4"},
        MAC3: {"ip": "192.0.2.3", "port": 4789, "ndp": "fe80::5", **({"arp": "10.55.55.4"} if mac3_arp else {})},
    }


async def start_server(port: int = 0, **kw) -> SvpServer:
    kw.setdefault("mapping", None if "source" in kw else seed_mapping())
    server = SvpServer(VNI, **kw)
    await server.start("127.0.0.1", port)
    return server


def make_backend(port: int, **props) -> SvpBackend:
    given = {"svp/host": "127.0.0.1", "svp/port": port, "svp/underlay_ip": "192.0.2.1", "svp/log_interval": "0.1"}
    given.update(props)
    values = resolve(SvpBackend.properties, given)
    b = SvpBackend(OverlayContext("vx23", VNI, IPv4Address("192.0.2.1"), 4789), values)
    b.backoff = (0.05, 0.2)
    b.changes, b.statuses = [], []
    b.add_listener(b.changes.append)
    b.add_status_listener(b.statuses.append)
    return b
