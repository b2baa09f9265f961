"""svp answers naming a MAC or VTEP that must never be programmed are refused (issue #12, items 8 and 10):
against the reference SVP server over real loopback TCP, answered as unknown, counted, logged once."""
from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv6Address

import pytest

from test_svp_support import MAC1, MAC2, make_backend, start_server
from varpd.model import Destination, Mapping, MappingRecord

ZERO, GROUP = "00:00:00:00:00:00", "01:00:5e:00:00:01"


def _rec(mac: str, vtep: str, arp: str) -> MappingRecord:
    return MappingRecord(mac, Destination(IPv4Address(vtep) if "." in vtep else IPv6Address(vtep), 4789),
                         IPv4Address(arp))


@pytest.fixture
async def backend():
    server = await start_server(mapping=Mapping.of([
        _rec(MAC1, "192.0.2.1", "10.55.55.2"),
        _rec(ZERO, "192.0.2.9", "10.55.55.9"),  # would become the VXLAN default entry
        _rec(GROUP, "192.0.2.9", "10.55.55.10"),
        _rec(MAC2, "127.0.0.1", "10.55.55.3"),
        _rec("de:ad:be:ef:00:03", "255.255.255.255", "10.55.55.4"),
        _rec("de:ad:be:ef:00:04", "224.0.0.1", "10.55.55.5"),
        _rec("de:ad:be:ef:00:05", "::", "10.55.55.6"),
    ]))
    b = make_backend(server.address[1])
    await b.start()
    yield b
    await b.stop()
    await server.stop()


def _refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "event=answer-refused" in r.getMessage()]


@pytest.mark.parametrize("arp, words", [
    ("10.55.55.9", "00:00:00:00:00:00 is the all-zero MAC"),
    ("10.55.55.10", "01:00:5e:00:00:01 is a multicast MAC"),
    ("10.55.55.3", "127.0.0.1 is a loopback address"),
])
async def test_vl3_answers_are_refused_counted_and_logged_once(backend, caplog, arp, words):
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        assert await backend.arp(IPv4Address(arp)) is None
    assert backend.stats["refused"] == 3
    lines = _refusals(caplog)
    assert len(lines) == 1 and words in lines[0] and "op=VL3_ACK" in lines[0] and arp in lines[0], lines
    assert await backend.arp(IPv4Address("10.55.55.2")) == MAC1  # the good record still answers


@pytest.mark.parametrize("mac, words", [
    (MAC2, "127.0.0.1 is a loopback address"),
    ("de:ad:be:ef:00:03", "255.255.255.255 is the broadcast address"),
    ("de:ad:be:ef:00:04", "224.0.0.1 is a multicast address"),
    ("de:ad:be:ef:00:05", ":: is the unspecified address"),
])
async def test_vl2_answers_naming_a_bad_vtep_are_refused(backend, caplog, mac, words):
    caplog.set_level(logging.WARNING)
    assert await backend.lookup(mac) is None
    assert await backend.record(mac) is None
    lines = _refusals(caplog)
    assert len(lines) == 1 and words in lines[0] and "op=VL2_ACK" in lines[0], lines
    assert backend.stats["refused"] == 2
    assert await backend.lookup(MAC1) == Destination(IPv4Address("192.0.2.1"), 4789)
