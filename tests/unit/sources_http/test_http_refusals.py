"""http answers naming a MAC or address that must never be programmed are refused (issue #12, items 8-10):
a hostile mapping server on loopback, each answer is "unknown", counted as a failure and logged once."""
from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv6Address

import pytest
from aiohttp import web

from test_http_support import MAC1, VNI, Served, make_backend

# what the server answers for an overlay IP (/ips/...) and for a MAC (/macs/...)
BY_IP = {
    "10.55.55.9": {"mac": "00:00:00:00:00:00", "ip": "192.0.2.9", "port": 4789, "arp": "10.55.55.9"},
    "10.55.55.10": {"mac": "ff:ff:ff:ff:ff:ff", "ip": "192.0.2.9", "port": 4789, "arp": "10.55.55.10"},
    "fd00::9": {"mac": "33:33:00:00:00:01", "ip": "192.0.2.9", "port": 4789, "ndp": "fd00::9"},
}
VTEPS = ["127.0.0.1", "255.255.255.255", "224.0.0.1", "0.0.0.0", "::ffff:192.0.2.9", "::1"]


@pytest.fixture
async def backend():
    async def by_ip(request):
        return web.json_response(BY_IP[request.match_info["ip"]])

    async def by_mac(request):
        mode = request.match_info["mode"]
        body = {"ip": "192.0.2.9", "port": 4789}
        if mode == "vtep":
            body["ip"] = request.query.get("ip") or VTEPS[int(request.match_info["mac"][-1])]
        elif mode in ("arp", "ndp"):
            body[mode] = {"arp": "224.0.0.1", "ndp": "ff02::1"}[mode]
        elif mode == "proxy":
            body["dhcp-proxy"] = "01:00:5e:00:00:01"
        return web.json_response(body)

    def app():
        a = web.Application()
        a.router.add_get("/{mode}/v1/overlays/{vni}/ips/{ip}", by_ip)
        a.router.add_get("/{mode}/v1/overlays/{vni}/macs/{mac}", by_mac)
        return a

    served = await Served(app).start()
    backends = []

    def make(mode: str):
        b = make_backend(f"{served.url}/{mode}", events="false")
        backends.append(b)
        return b

    yield make
    for b in backends:
        await b.stop()
    await served.stop()


def _problems(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "varpd_plugins.http" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("ip, words", [
    ("10.55.55.9", "00:00:00:00:00:00 is the all-zero MAC"),
    ("10.55.55.10", "ff:ff:ff:ff:ff:ff is the broadcast MAC"),
    ("fd00::9", "33:33:00:00:00:01 is a multicast MAC"),
])
async def test_an_owner_that_is_not_a_unicast_mac_is_refused(backend, caplog, ip, words):
    caplog.set_level(logging.WARNING)
    b = backend("own")
    await b.start()
    addr = IPv4Address(ip) if "." in ip else IPv6Address(ip)
    assert await (b.arp(addr) if addr.version == 4 else b.ndp(addr)) is None
    lines = _problems(caplog)
    assert len(lines) == 1 and words in lines[0], lines
    assert b.stats["failures"] == 1


@pytest.mark.parametrize("index, words", [
    (0, "127.0.0.1 is a loopback address, not a VTEP"),
    (1, "255.255.255.255 is the broadcast address, not a VTEP"),
    (2, "224.0.0.1 is a multicast address, not a VTEP"),
    (3, "0.0.0.0 is the unspecified address, not a VTEP"),
    (4, "::ffff:192.0.2.9 is IPv4-mapped"),
    (5, "::1 is a loopback address, not a VTEP"),
])
async def test_a_vtep_that_cannot_be_programmed_is_refused(backend, caplog, index, words):
    caplog.set_level(logging.WARNING)
    b = backend("vtep")
    await b.start()
    assert await b.lookup(f"de:ad:be:ef:00:0{index}") is None
    lines = _problems(caplog)
    assert len(lines) == 1 and words in lines[0], lines


@pytest.mark.parametrize("mode, words", [
    ("arp", "field 'arp': 224.0.0.1 is a multicast address"),
    ("ndp", "field 'ndp': ff02::1 is a multicast address"),
    ("proxy", "field 'dhcp-proxy': 01:00:5e:00:00:01 is a multicast MAC"),
])
async def test_records_with_multicast_overlay_fields_are_refused(backend, caplog, mode, words):
    caplog.set_level(logging.WARNING)
    b = backend(mode)
    await b.start()
    assert await b.record(MAC1) is None and await b.lookup(MAC1) is None
    lines = _problems(caplog)
    assert len(lines) == 1 and words in lines[0], lines

