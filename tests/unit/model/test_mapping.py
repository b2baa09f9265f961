"""Mapping.of (both indexes) and Mapping.diff (exactly the delta, removed records whole)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, strategies as st

from varpd.model import Destination, Mapping, MappingChange, MappingRecord


def rec(n: int, port: int = 4789, arp: bool = True, ndp: bool = True, proxy: str | None = None) -> MappingRecord:
    return MappingRecord(f"02:00:00:00:00:{n:02x}", Destination(IPv4Address(f"192.0.2.{n}"), port),
                         IPv4Address(f"10.0.0.{n}") if arp else None, IPv6Address(f"fd00::{n:x}") if ndp else None,
                         proxy)


def test_of_builds_both_indexes():
    a, b, c = rec(1), rec(2, ndp=False), rec(3, arp=False, ndp=False)
    m = Mapping.of([a, b, c])
    assert len(m) == 3
    assert dict(m.by_mac) == {a.mac: a, b.mac: b, c.mac: c}
    assert dict(m.by_ip) == {a.arp: a, a.ndp: a, b.arp: b}


def test_of_last_record_of_a_mac_wins():
    m = Mapping.of([rec(1), rec(1, port=9)])
    assert len(m) == 1 and m.by_mac[rec(1).mac].dest.port == 9


def test_empty():
    m = Mapping()
    assert len(m) == 0 and not m.diff(Mapping())
    assert Mapping.of([]).by_ip == {}


def test_diff_added_removed_changed():
    old = Mapping.of([rec(1), rec(2), rec(3)])
    new = Mapping.of([rec(1), rec(2, port=4790), rec(4)])
    change = old.diff(new)
    assert set(change.upserted) == {rec(2, port=4790), rec(4)}
    assert change.removed == (rec(3),)  # the old record, whole: its IPs must be withdrawn too
    assert not change.full_resync and change


def test_diff_detects_changes_in_every_field():
    base = rec(1)
    for other in (rec(1, port=1), rec(1, arp=False), rec(1, ndp=False), rec(1, proxy="02:00:00:00:00:09"),
                  MappingRecord(base.mac, Destination(IPv4Address("192.0.2.200"), 4789), base.arp, base.ndp)):
        change = Mapping.of([base]).diff(Mapping.of([other]))
        assert change.upserted == (other,) and change.removed == ()


def test_diff_of_equal_mappings_is_empty_and_falsy():
    assert not Mapping.of([rec(1), rec(2)]).diff(Mapping.of([rec(2), rec(1)]))
    assert not MappingChange() and MappingChange(full_resync=True)


_recs = st.lists(st.builds(rec, st.integers(1, 12), st.sampled_from([4789, 4790]), st.booleans(), st.booleans()),
                 max_size=12)


@given(_recs, _recs)
def test_diff_applied_to_old_gives_new(a, b):
    old, new = Mapping.of(a), Mapping.of(b)
    change = old.diff(new)
    table = dict(old.by_mac)
    for r in change.removed:
        assert table.pop(r.mac) == old.by_mac[r.mac]
    for r in change.upserted:
        assert old.by_mac.get(r.mac) != r
        table[r.mac] = r
    assert table == dict(new.by_mac)
    assert not (old.diff(old) or new.diff(new))


def test_a_record_without_dhcp_proxy_has_four_slots_and_one_with_it_behaves_alike():
    """64 bytes instead of 80 for the common record; a proxied one is the same value type throughout."""
    import copy
    import dataclasses
    import pickle
    import sys

    class FourSlots:
        __slots__ = ("a", "b", "c", "d")

    dest = Destination(IPv4Address("192.0.2.2"), 4789)
    plain = MappingRecord("de:ad:be:ef:00:01", dest, IPv4Address("10.0.0.1"))
    proxied = MappingRecord("de:ad:be:ef:00:01", dest, IPv4Address("10.0.0.1"), dhcp_proxy="de:ad:be:ef:00:00")
    assert sys.getsizeof(plain) == sys.getsizeof(FourSlots()) and plain.dhcp_proxy is None
    assert isinstance(proxied, MappingRecord) and proxied.dhcp_proxy == "de:ad:be:ef:00:00"
    assert proxied != plain and dataclasses.replace(proxied, dhcp_proxy=None) == plain
    assert type(dataclasses.replace(proxied, dhcp_proxy=None)) is MappingRecord
    assert dataclasses.replace(plain, dhcp_proxy="de:ad:be:ef:00:00") == proxied
    assert hash(MappingRecord.compact(plain.mac, dest, plain.arp_int, None, "de:ad:be:ef:00:00")) == hash(proxied)
    for rec in (plain, proxied):
        assert copy.copy(rec) == rec and pickle.loads(pickle.dumps(rec)) == rec
        with pytest.raises(dataclasses.FrozenInstanceError):
            rec.dhcp_proxy = "de:ad:be:ef:00:09"
