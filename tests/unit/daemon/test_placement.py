"""What an overlay's namespace and listen address mean for its status and its VXLAN MTU."""
from __future__ import annotations

from ipaddress import ip_address

import pytest

from varpd.daemon.placement import Place
from varpd_kmod.underlay import LocalAddress

V4, V6 = ip_address("192.0.2.1"), ip_address("2001:db8::1")


def on_eth0(ip, mtu=1500, usable=True) -> LocalAddress:
    return LocalAddress(ip, 2, "eth0", mtu, usable)


def test_problems_name_the_namespace_and_the_address():
    assert Place(None, 0, on_eth0(V4), V4).problem is None
    assert Place("t1", None, None, V4).problem.startswith("network namespace t1 does not exist")
    assert Place(None, 0, None, V4).problem == \
        "vxlan/listen_ip 192.0.2.1 is not an address of any interface in the daemon's network namespace"
    assert "tentative or failed IPv6 duplicate address detection" in Place("t1", 7, on_eth0(V6, usable=False), V6).problem


@pytest.mark.parametrize("ip, underlay_mtu, want", [(V4, 1500, 1450), (V6, 1500, 1430), (V4, 9000, 8950),
                                                     (V6, 600, 576)])
def test_the_vxlan_mtu_is_the_underlays_less_the_encapsulation(ip, underlay_mtu, want):
    assert Place(None, 0, on_eth0(ip, underlay_mtu), ip).vxlan_mtu({}) == want


def test_no_mtu_is_set_when_the_user_or_the_kernel_decides_or_no_underlay_is_known():
    place = Place(None, 0, on_eth0(V4), V4)
    assert place.vxlan_mtu({"link/mtu": 1400}) is None
    assert place.vxlan_mtu({"vxlan/underlay_dev": "eth1"}) is None  # the kernel derives it from that device
    assert Place(None, 0, None, V4).vxlan_mtu({}) is None
