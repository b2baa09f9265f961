"""The shootdown records a mapping change produces, from the whole tables or from the source's own change."""
from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv6Address

import pytest

from test_svp_support import MAC1, MAC2, MAC3, seed_mapping
from varpd.model import Destination, Mapping, MappingRecord
from varpd.svp_server.shootdown import records_for

NEW = "de:ad:be:ef:00:09"


def _edit(mapping: Mapping, mac: str, **changes) -> Mapping:
    return Mapping.of([dataclasses.replace(r, **changes) if r.mac == mac else r for r in mapping.by_mac.values()])


def _without(mapping: Mapping, mac: str) -> Mapping:
    return Mapping.of([r for r in mapping.by_mac.values() if r.mac != mac])


def _ip_moved(mapping: Mapping) -> Mapping:
    """10.55.55.4 leaves MAC3 for a new MAC."""
    ip = IPv4Address("10.55.55.4")
    recs = [dataclasses.replace(r, arp=None) if r.mac == MAC3 else r for r in mapping.by_mac.values()]
    return Mapping.of(recs + [MappingRecord(NEW, Destination(IPv4Address("192.0.2.2"), 4789), ip, None)])


CASES = {
    "moved": lambda m: _edit(m, MAC2, dest=Destination(IPv4Address("192.0.2.3"), 4789)),
    "removed": lambda m: _without(m, MAC1),
    "ip-moved": _ip_moved,
    "ip-dropped": lambda m: _edit(m, MAC3, arp=None),
    "added": lambda m: Mapping.of(list(m.by_mac.values())
                                  + [MappingRecord(NEW, Destination(IPv4Address("192.0.2.2"), 4789), None, None)]),
}


@pytest.mark.parametrize("case", CASES)
def test_the_sources_change_gives_the_same_records_as_the_whole_diff(case):
    old = seed_mapping()
    new = CASES[case](old)
    whole = records_for(old, new)
    assert records_for(old, new, old.diff(new)) == whole


def test_records_name_what_hosts_must_forget():
    old = seed_mapping()
    assert records_for(old, CASES["moved"](old)) == ([MAC2], [])
    macs, ips = records_for(old, CASES["removed"](old))
    assert macs == [MAC1] and set(ips) == {IPv4Address("10.55.55.2"), IPv6Address("fe80::3")}
    assert records_for(old, _ip_moved(old)) == ([], [IPv4Address("10.55.55.4")])
    assert records_for(old, CASES["added"](old)) == ([], [])
