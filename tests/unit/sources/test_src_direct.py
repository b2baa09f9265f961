"""DirectBackend (POINT mode): dest_ip checks, family match, dest_port default and range."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from varpd.backend.base import OverlayContext, PluginMode
from varpd.backend.conformance import CONTEXT, BackendConformance
from varpd.backend.errors import PropertyError
from varpd.backend.properties import resolve
from varpd.model import Destination, Mapping
from varpd_plugins.direct import DirectBackend

CTX6 = OverlayContext(name="vx6", vni=6, listen_ip=IPv6Address("2001:db8::1"), listen_port=4789)


def make(dest_ip, ctx=CONTEXT, **extra) -> DirectBackend:
    return DirectBackend(ctx, resolve(DirectBackend.properties, {"direct/dest_ip": dest_ip, **extra}))


def test_mode_is_point():
    assert DirectBackend.mode is PluginMode.POINT
    assert DirectBackend.enumerable is False


def test_dest_ip_is_required():
    with pytest.raises(PropertyError, match="^property direct/dest_ip: unset required property$"):
        resolve(DirectBackend.properties, {})
    with pytest.raises(PropertyError) as info:
        DirectBackend(CONTEXT, {})
    assert info.value.name == "direct/dest_ip"


@pytest.mark.parametrize("ip, ctx, reason", [
    ("239.1.1.1", CONTEXT, "239.1.1.1 is a multicast address, not a VTEP"),
    ("ff0e::1", CTX6, "ff0e::1 is a multicast address, not a VTEP"),
    ("0.0.0.0", CONTEXT, "0.0.0.0 is the unspecified address, not a VTEP"),
    ("::", CTX6, ":: is the unspecified address, not a VTEP"),
    ("::ffff:192.0.2.9", CTX6, "is IPv4-mapped: use the IPv4 address 192.0.2.9"),
    ("::ffff:192.0.2.9", CONTEXT, "IPv4-mapped"),
    ("2002:c000:209::1", CTX6, "2002:c000:209::1 is a 6to4 address (2002::/16)"),
])
def test_refused_dest_ips(ip, ctx, reason):
    with pytest.raises(PropertyError) as info:
        make(ip, ctx)
    assert info.value.name == "direct/dest_ip"
    assert str(info.value).startswith("property direct/dest_ip: ")
    assert reason in str(info.value)


@pytest.mark.parametrize("ip, ctx", [("2001:db8::9", CONTEXT), ("192.0.2.9", CTX6)])
def test_family_must_match_listen_ip(ip, ctx):
    with pytest.raises(PropertyError, match="direct/dest_ip: .* is not of the same family as vxlan/listen_ip"):
        make(ip, ctx)


def test_garbage_dest_ip():
    with pytest.raises(PropertyError, match="direct/dest_ip: 'nope' is not a valid ip"):
        make("nope")


async def test_default_port_is_4789():
    b = make("192.0.2.9")
    assert b.dest == Destination(IPv4Address("192.0.2.9"), 4789)


@pytest.mark.parametrize("port, ok", [("0", False), ("1", True), ("65535", True), ("65536", False),
                                      ("-5", False), ("0x12B5", True)])
def test_dest_port_range(port, ok):
    if ok:
        assert make("192.0.2.9", **{"direct/dest_port": port}).dest.port == int(port, 0)
    else:
        with pytest.raises(PropertyError) as info:
            make("192.0.2.9", **{"direct/dest_port": port})
        assert info.value.name == "direct/dest_port"


def test_constructor_checks_port_range_without_resolve():
    with pytest.raises(PropertyError, match="direct/dest_port: 70000 is outside 1-65535"):
        DirectBackend(CONTEXT, {"direct/dest_ip": ip_address("192.0.2.9"), "direct/dest_port": 70000})


async def test_default_and_lookup_answer_the_destination():
    b = make("2001:db8::9", CTX6, **{"direct/dest_port": 8472})
    await b.start()
    want = Destination(IPv6Address("2001:db8::9"), 8472)
    assert await b.default() == want
    for mac in ("de:ad:be:ef:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"):
        assert await b.lookup(mac) == want
    assert b.snapshot() is None
    await b.stop()
    await b.stop()


class TestDirectConformance(BackendConformance):
    async def make_backend(self, mapping: Mapping) -> DirectBackend:
        return make("192.0.2.77")
