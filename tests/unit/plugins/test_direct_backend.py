"""The direct backend: one fixed destination, with the address checks illumos makes (and a few more)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from varpd.backend.base import OverlayContext, PluginMode
from varpd.backend.conformance import CONTEXT, BackendConformance
from varpd.backend.errors import PropertyError
from varpd.backend.properties import resolve
from varpd.model import Destination, Mapping
from varpd_plugins.direct import DirectBackend

CTX6 = OverlayContext(name="vx23", vni=23, listen_ip=IPv6Address("2001:db8::1"), listen_port=4789)


def make(given: dict, ctx: OverlayContext = CONTEXT) -> DirectBackend:
    return DirectBackend(ctx, resolve(DirectBackend.properties, given))


@pytest.mark.parametrize("ip,port,ctx,dest", [
    ("192.0.2.2", "4790", CONTEXT, Destination(IPv4Address("192.0.2.2"), 4790)),
    ("2001:db8::9", "8472", CTX6, Destination(IPv6Address("2001:db8::9"), 8472)),
], ids=["ipv4", "ipv6"])
async def test_default_and_lookup_are_the_destination(ip, port, ctx, dest):
    b = make({"direct/dest_ip": ip, "direct/dest_port": port}, ctx)
    assert b.mode is PluginMode.POINT and not b.enumerable and b.snapshot() is None
    await b.start()
    try:
        assert await b.default() == dest
        for mac in ("de:ad:be:ef:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"):
            assert await b.lookup(mac) == dest
        assert b.snapshot() is None
    finally:
        await b.stop()


def test_port_defaults_to_4789():
    assert make({"direct/dest_ip": "192.0.2.2"}).dest == Destination(IPv4Address("192.0.2.2"), 4789)


def test_ipv6_destination():
    assert make({"direct/dest_ip": "2001:db8::2"}, CTX6).dest == Destination(IPv6Address("2001:db8::2"), 4789)


def test_dest_ip_is_required():
    with pytest.raises(PropertyError, match="^property direct/dest_ip: unset required property$"):
        resolve(DirectBackend.properties, {"direct/dest_port": "4789"})
    with pytest.raises(PropertyError, match="^property direct/dest_ip: unset required property$"):
        resolve(DirectBackend.properties, {})
    with pytest.raises(PropertyError) as info:  # the constructor checks too, without resolve()
        DirectBackend(CONTEXT, {})
    assert info.value.name == "direct/dest_ip"


@pytest.mark.parametrize("ip,ctx,reason", [
    ("::ffff:192.0.2.2", CTX6, "is IPv4-mapped: write the IPv4 address 192.0.2.2"),
    ("::ffff:192.0.2.2", CONTEXT, "is IPv4-mapped: write the IPv4 address 192.0.2.2"),  # before the family check
    ("2002:c000:202::1", CTX6, "2002:c000:202::1 is a 6to4 address (2002::/16)"),
    ("224.0.0.5", CONTEXT, "224.0.0.5 is a multicast address, not a VTEP"),
    ("ff02::1", CTX6, "ff02::1 is a multicast address, not a VTEP"),
    ("0.0.0.0", CONTEXT, "0.0.0.0 is the unspecified address, not a VTEP"),
    ("::", CTX6, ":: is the unspecified address, not a VTEP"),
    ("127.0.0.1", CONTEXT, "127.0.0.1 is a loopback address, not a VTEP"),
    ("255.255.255.255", CONTEXT, "255.255.255.255 is the broadcast address, not a VTEP"),
    ("2001:db8::2", CONTEXT, "2001:db8::2 is not of the same family as vxlan/listen_ip 192.0.2.1"),
    ("192.0.2.2", CTX6, "192.0.2.2 is not of the same family as vxlan/listen_ip 2001:db8::1"),
])
def test_refused_destinations(ip, ctx, reason):
    with pytest.raises(PropertyError) as info:
        make({"direct/dest_ip": ip}, ctx)
    assert info.value.name == "direct/dest_ip"
    assert reason in str(info.value) and str(info.value).startswith("property direct/dest_ip: ")


@pytest.mark.parametrize("raw", ["not-an-ip", "192.0.2.300"])
def test_dest_ip_type(raw):
    with pytest.raises(PropertyError, match=f"^property direct/dest_ip: '{raw}' is not a valid ip"):
        make({"direct/dest_ip": raw})


@pytest.mark.parametrize("port,reason", [
    ("0", "below the minimum 1"),
    ("65536", "above the maximum 65535"),
    ("-1", "negative"),
    ("-5", "negative"),
    ("http", "not a valid uint"),
])
def test_dest_port_range(port, reason):
    with pytest.raises(PropertyError, match=f"direct/dest_port: .*{reason}") as info:
        make({"direct/dest_ip": "192.0.2.2", "direct/dest_port": port})
    assert info.value.name == "direct/dest_port"


@pytest.mark.parametrize("port,want", [("1", 1), (65535, 65535), ("65535", 65535), ("0x12B5", 4789)])
def test_port_bounds_and_spellings_accepted(port, want):
    assert make({"direct/dest_ip": "192.0.2.2", "direct/dest_port": port}).dest.port == want


def test_constructor_checks_port_range_without_resolve():
    with pytest.raises(PropertyError, match="direct/dest_port: 70000 is outside 1-65535"):
        DirectBackend(CONTEXT, {"direct/dest_ip": ip_address("192.0.2.9"), "direct/dest_port": 70000})


class TestDirectConformance(BackendConformance):
    """A POINT backend: the mapping is ignored; every MAC goes to the one destination."""

    async def make_backend(self, mapping: Mapping) -> DirectBackend:
        return make({"direct/dest_ip": "192.0.2.2"})
