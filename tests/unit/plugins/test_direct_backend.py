"""The direct backend: one fixed destination, with the address checks illumos makes (and a few more)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

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


async def test_default_and_lookup_are_the_destination():
    b = make({"direct/dest_ip": "192.0.2.2", "direct/dest_port": "4790"})
    dest = Destination(IPv4Address("192.0.2.2"), 4790)
    assert await b.default() == dest
    assert await b.lookup("de:ad:be:ef:00:01") == dest
    assert await b.lookup("ff:ff:ff:ff:ff:ff") == dest
    assert b.mode is PluginMode.POINT and not b.enumerable and b.snapshot() is None


def test_port_defaults_to_4789():
    assert make({"direct/dest_ip": "192.0.2.2"}).dest.port == 4789


def test_ipv6_destination():
    assert make({"direct/dest_ip": "2001:db8::2"}, CTX6).dest == Destination(IPv6Address("2001:db8::2"), 4789)


def test_dest_ip_is_required():
    with pytest.raises(PropertyError, match="direct/dest_ip: unset required property"):
        resolve(DirectBackend.properties, {"direct/dest_port": "4789"})


@pytest.mark.parametrize("ip,ctx,reason", [
    ("::ffff:192.0.2.2", CTX6, "IPv4-mapped: use the IPv4 address 192.0.2.2"),
    ("2002:c000:202::1", CTX6, "6to4 address"),
    ("224.0.0.5", CONTEXT, "multicast"),
    ("ff02::1", CTX6, "multicast"),
    ("0.0.0.0", CONTEXT, "unspecified"),
    ("::", CTX6, "unspecified"),
    ("2001:db8::2", CONTEXT, "not of the same family as vxlan/listen_ip 192.0.2.1"),
    ("192.0.2.2", CTX6, "not of the same family"),
])
def test_refused_destinations(ip, ctx, reason):
    with pytest.raises(PropertyError) as info:
        make({"direct/dest_ip": ip}, ctx)
    assert info.value.name == "direct/dest_ip"
    assert reason in str(info.value) and str(info.value).startswith("property direct/dest_ip: ")


@pytest.mark.parametrize("raw,reason", [
    ("not-an-ip", "is not a valid ip"),
    ("192.0.2.300", "is not a valid ip"),
])
def test_dest_ip_type(raw, reason):
    with pytest.raises(PropertyError, match=reason):
        make({"direct/dest_ip": raw})


@pytest.mark.parametrize("port,reason", [
    ("0", "below the minimum 1"),
    ("65536", "above the maximum 65535"),
    ("-1", "negative"),
    ("http", "not a valid uint"),
])
def test_dest_port_range(port, reason):
    with pytest.raises(PropertyError, match=f"direct/dest_port: .*{reason}"):
        make({"direct/dest_ip": "192.0.2.2", "direct/dest_port": port})


def test_port_bounds_accepted():
    assert make({"direct/dest_ip": "192.0.2.2", "direct/dest_port": "1"}).dest.port == 1
    assert make({"direct/dest_ip": "192.0.2.2", "direct/dest_port": 65535}).dest.port == 65535


class TestDirectConformance(BackendConformance):
    """A POINT backend: the mapping is ignored; every MAC goes to the one destination."""

    async def make_backend(self, mapping: Mapping) -> DirectBackend:
        return make({"direct/dest_ip": "192.0.2.2"})
