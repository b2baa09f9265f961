from ipaddress import ip_address as ip

import pytest

from varpd.model import Destination
from varpd.model.overrides import apply_overrides, format_override, parse_destination
from varpd_kmod.types import FdbEntry, NeighEntry


@pytest.mark.parametrize("text, want", [
    ("drop", None),
    ("192.0.2.9", Destination(ip("192.0.2.9"), 4789)),
    ("192.0.2.9:4790", Destination(ip("192.0.2.9"), 4790)),
    ("[2001:db8::9]:4790", Destination(ip("2001:db8::9"), 4790)),
    ("2001:db8::9", Destination(ip("2001:db8::9"), 4789)),
])
def test_parse_destination(text, want):
    assert parse_destination(text) == want
    assert parse_destination(format_override(want)) == want


@pytest.mark.parametrize("text, words", [
    ("nowhere", "not an IP address"), ("192.0.2.9:0", "1-65535"), ("192.0.2.9:x", "1-65535"),
    ("224.0.0.1:4789", "is a multicast address, not a VTEP"), ("[2001:db8::9", r"\[IPv6\]:port"),
    ("127.0.0.1:4789", "is a loopback address"), ("255.255.255.255:4789", "is the broadcast address"),
    ("[::ffff:192.0.2.9]:4789", "IPv4-mapped"),
])
def test_bad_destinations_say_why(text, words):
    with pytest.raises(ValueError, match=words):
        parse_destination(text)


def test_overrides_replace_add_and_drop():
    a = FdbEntry("de:ad:be:ef:00:01", ip("192.0.2.2"), 4789)
    b = FdbEntry("de:ad:be:ef:00:02", ip("192.0.2.3"), 4789)
    na, nb = NeighEntry(ip("10.55.55.3"), a.mac), NeighEntry(ip("10.55.55.4"), b.mac)
    fdb, neigh = apply_overrides([a, b], [na, nb], {
        a.mac: Destination(ip("192.0.2.99"), 4789), b.mac: None, "02:00:00:00:00:07": Destination(ip("192.0.2.7"), 1)})
    assert sorted(fdb, key=lambda e: e.mac) == [
        FdbEntry("02:00:00:00:00:07", ip("192.0.2.7"), 1), FdbEntry(a.mac, ip("192.0.2.99"), 4789)]
    assert neigh == [na]
