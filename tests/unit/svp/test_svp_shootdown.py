"""The shootdown records a mapping change produces, from the whole tables or from the source's own change."""
from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv6Address

import pytest

from test_svp_support import MAC1, MAC2, MAC3, seed_mapping
from varpd.model import Destination, Mapping, MappingRecord
from varpd.svp_server import shootdown
from varpd.svp_server.shootdown import ShootdownLog, records_for

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


def _ip_given_to_new(mapping: Mapping) -> Mapping:
    """A new MAC takes 10.55.55.4, which had no owner."""
    ip = IPv4Address("10.55.55.4")
    return Mapping.of(list(mapping.by_mac.values())
                      + [MappingRecord(NEW, Destination(IPv4Address("192.0.2.2"), 4789), ip, None)])


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


@pytest.mark.parametrize("released", [(), (IPv4Address("10.55.55.4"),)], ids=["never-owned", "released"])
def test_an_ip_given_an_owner_is_compared_the_same_way_by_both_paths(released):
    old = CASES["ip-dropped"](seed_mapping())
    new = _ip_given_to_new(old)
    assert records_for(old, new, old.diff(new), released) == records_for(old, new, None, released)
    assert records_for(old, new, None, released) == ([], list(released))


def test_records_name_what_hosts_must_forget():
    old = seed_mapping()
    assert records_for(old, CASES["moved"](old)) == ([MAC2], [])
    macs, ips = records_for(old, CASES["removed"](old))
    assert macs == [MAC1] and set(ips) == {IPv4Address("10.55.55.2"), IPv6Address("fe80::3")}
    assert records_for(old, _ip_moved(old)) == ([], [IPv4Address("10.55.55.4")])
    assert records_for(old, CASES["added"](old)) == ([], [])


def test_an_ip_released_then_reassigned_in_two_changes_is_announced_as_a_move():
    """Release and reassignment seen apart (two polls) give the same VL3 record as seen together."""
    ip, host = IPv4Address("10.55.55.4"), IPv4Address("192.0.2.9")
    log = ShootdownLog(23)
    log.seen(host)
    seed = seed_mapping()
    dropped = CASES["ip-dropped"](seed)
    assert log.changed(seed, dropped) > 0
    before = log.pending(host)
    log.changed(dropped, _ip_given_to_new(dropped), dropped.diff(_ip_given_to_new(dropped)))
    new_records = log.fetch(host, 1 << 20)[before:]
    assert [r.ip for r in new_records] == [ip]
    assert ip not in log._released  # owned again: from now on an ordinary IP


def test_a_release_is_forgotten_after_released_for(monkeypatch):
    log = ShootdownLog(23)
    seed = seed_mapping()
    dropped = CASES["ip-dropped"](seed)
    now = [1000.0]
    monkeypatch.setattr(shootdown.time, "monotonic", lambda: now[0])
    log.changed(seed, dropped)
    now[0] += shootdown.RELEASED_FOR + 1
    assert log.changed(dropped, _ip_given_to_new(dropped)) == 0


def test_the_memory_of_released_ips_is_capped():
    log = ShootdownLog(23, max_per_host=2)
    owned = Mapping.of([MappingRecord(f"02:00:00:00:00:{i:02x}", Destination(IPv4Address("192.0.2.1"), 4789),
                                      IPv4Address(f"10.0.0.{i}"), None) for i in range(1, 6)])
    bare = Mapping.of([dataclasses.replace(r, arp=None) for r in owned.by_mac.values()])
    log.changed(owned, bare)
    assert list(log._released) == [IPv4Address("10.0.0.4"), IPv4Address("10.0.0.5")]
