from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from varpd_kmod import (
    DeviceConflict,
    DeviceSpec,
    KmodError,
    delete_overlay,
    ensure_overlay,
    find_overlay,
    link_index,
)

from _kmod_helpers import link_json, sh

pytestmark = pytest.mark.integration

V4 = IPv4Address("192.0.2.1")


def vxlan_details(ns: str, name: str) -> str:
    return sh("ip", "-n", ns, "-d", "link", "show", "dev", name)


async def test_create_adopt_delete_with_new_bridge(make_netns):
    ns = make_netns("dev")
    spec = DeviceSpec("vx0", 4242, V4, port=4789, bridge="br0", mtu=1400)
    h = await ensure_overlay(spec, netns=ns)
    assert h.created_vxlan and h.created_bridge
    assert h.name == "vx0" and h.vni == 4242 and h.bridge == "br0"
    out = vxlan_details(ns, "vx0")
    for token in ("vxlan id 4242", "local 192.0.2.1", "dstport 4789", "nolearning", "proxy", "l2miss", "l3miss"):
        assert token in out, (token, out)
    assert "remote" not in out and "group" not in out.split("vxlan", 1)[1].split("dstport")[0]
    info = link_json("vx0", ns)
    assert info["ifindex"] == h.ifindex
    assert info["master"] == "br0"
    assert info["mtu"] == 1400
    assert "UP" in info["flags"]
    br = link_json("br0", ns)
    assert br["ifindex"] == h.bridge_ifindex and "UP" in br["flags"]
    assert await link_index("vx0", netns=ns) == h.ifindex
    assert await link_index("nope0", netns=ns) is None

    # idempotent re-create adopts
    h2 = await ensure_overlay(spec, netns=ns)
    assert not h2.created_vxlan and not h2.created_bridge
    assert h2.ifindex == h.ifindex and h2.bridge_ifindex == h.bridge_ifindex

    found = await find_overlay("vx0", netns=ns)
    assert found is not None
    assert (found.ifindex, found.vni, found.bridge, found.bridge_ifindex) == (h.ifindex, 4242, "br0", h.bridge_ifindex)
    assert not found.created_vxlan and not found.created_bridge
    assert await find_overlay("nope0", netns=ns) is None

    # delete with the creating handle: vxlan and the (now empty) created bridge go
    await delete_overlay(h, netns=ns)
    assert link_json("vx0", ns) is None
    assert link_json("br0", ns) is None
    # deleting again: missing device is not an error
    await delete_overlay(h, netns=ns)


@pytest.mark.parametrize(
    "change, word",
    [
        (dict(vni=43), "vni"),
        (dict(port=8472), "port"),
        (dict(local_ip=IPv4Address("192.0.2.9")), "local_ip"),
        (dict(local_ip=IPv6Address("2001:db8::1")), "local_ip"),
    ],
)
async def test_conflicting_recreate(make_netns, change, word):
    ns = make_netns("dev")
    base = dict(name="vx0", vni=42, local_ip=V4)
    h = await ensure_overlay(DeviceSpec(**base), netns=ns)
    with pytest.raises(DeviceConflict) as ei:
        await ensure_overlay(DeviceSpec(**{**base, **change}), netns=ns)
    assert word in str(ei.value)
    # nothing was changed or removed
    again = await ensure_overlay(DeviceSpec(**base), netns=ns)
    assert again.ifindex == h.ifindex and not again.created_vxlan


async def test_conflict_flags_and_kind(make_netns):
    ns = make_netns("dev")
    sh("ip", "-n", ns, "link", "add", "vx1", "type", "vxlan", "id", "42", "local", "192.0.2.1", "dstport", "4789")
    with pytest.raises(DeviceConflict) as ei:
        await ensure_overlay(DeviceSpec("vx1", 42, V4), netns=ns)
    assert "learning" in str(ei.value)
    sh("ip", "-n", ns, "link", "add", "dm0", "type", "veth", "peer", "name", "dm1")
    with pytest.raises(DeviceConflict, match="kind"):
        await ensure_overlay(DeviceSpec("dm0", 42, V4), netns=ns)
    with pytest.raises(DeviceConflict, match="bridge"):
        await ensure_overlay(DeviceSpec("vx2", 44, V4, bridge="dm0"), netns=ns)
    # the failed call above created vx2 and must have rolled it back
    assert link_json("vx2", ns) is None
    # delete_overlay refuses to delete a non-vxlan device of that name
    h = await ensure_overlay(DeviceSpec("vx3", 45, V4), netns=ns)
    sh("ip", "-n", ns, "link", "del", "vx3")
    sh("ip", "-n", ns, "link", "add", "vx3", "type", "veth", "peer", "name", "vx3p")
    with pytest.raises(DeviceConflict):
        await delete_overlay(h, netns=ns)
    assert link_json("vx3", ns) is not None


async def test_preexisting_bridge_is_kept(make_netns):
    ns = make_netns("dev")
    sh("ip", "-n", ns, "link", "add", "brx", "type", "bridge")
    h = await ensure_overlay(DeviceSpec("vx0", 42, V4, bridge="brx"), netns=ns)
    assert h.created_vxlan and not h.created_bridge
    assert link_json("vx0", ns)["master"] == "brx"
    assert "UP" in link_json("brx", ns)["flags"]
    await delete_overlay(h, netns=ns)
    assert link_json("vx0", ns) is None
    assert link_json("brx", ns) is not None


async def test_created_bridge_with_other_ports(make_netns):
    ns = make_netns("dev")
    h = await ensure_overlay(DeviceSpec("vx0", 42, V4, bridge="br0"), netns=ns)
    sh("ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
    sh("ip", "-n", ns, "link", "set", "p0", "master", "br0")
    await delete_overlay(h, netns=ns)
    assert link_json("vx0", ns) is None
    assert link_json("br0", ns) is not None  # still has p0
    await delete_overlay(h, netns=ns, force=True)
    assert link_json("br0", ns) is None
    assert link_json("p0", ns) is not None  # only the bridge went


async def test_ipv6_local_and_underlay(make_netns):
    ns = make_netns("dev")
    sh("ip", "-n", ns, "link", "add", "ul0", "type", "veth", "peer", "name", "ul1")
    spec = DeviceSpec("vx6", 77, IPv6Address("2001:db8::1"), port=4790, underlay_dev="ul0")
    h = await ensure_overlay(spec, netns=ns)
    out = vxlan_details(ns, "vx6")
    for token in ("vxlan id 77", "local 2001:db8::1", "dev ul0", "dstport 4790", "nolearning", "proxy", "l2miss", "l3miss"):
        assert token in out, (token, out)
    h2 = await ensure_overlay(spec, netns=ns)
    assert h2.ifindex == h.ifindex and not h2.created_vxlan
    with pytest.raises(DeviceConflict, match="local_ip"):
        await ensure_overlay(DeviceSpec("vx6", 77, IPv6Address("2001:db8::2"), port=4790), netns=ns)
    with pytest.raises(KmodError, match="underlay"):
        await ensure_overlay(DeviceSpec("vx7", 78, V4, underlay_dev="nope0"), netns=ns)
    await delete_overlay(h, netns=ns)
    assert link_json("vx6", ns) is None
    assert link_json("ul0", ns) is not None


async def test_missing_netns_is_an_error():
    import os

    name = "vk-missing-does-not-exist"
    with pytest.raises(KmodError):
        await ensure_overlay(DeviceSpec("vx0", 42, V4), netns=name)
    with pytest.raises(KmodError):
        await link_index("lo", netns=name)
    assert not os.path.exists(f"/var/run/netns/{name}")


def _host_presence(ns: str, dev: str) -> tuple[list[str], str, str, str]:
    """(IPv6 addresses, addr_gen_mode, rp_filter, arp_ignore) of `dev` as iproute2 and sysctl see them."""
    addrs = [a["local"] for i in __import__("json").loads(sh("ip", "-n", ns, "-j", "-6", "addr", "show", "dev", dev))
             for a in i.get("addr_info", [])]
    mode = link_json(dev, ns).get("inet6_addr_gen_mode", "")
    rp = sh("sysctl", "-n", f"net.ipv4.conf.{dev}.rp_filter", ns=ns).strip()
    ai = sh("sysctl", "-n", f"net.ipv4.conf.{dev}.arp_ignore", ns=ns).strip()
    return addrs, mode, rp, ai


async def test_created_devices_carry_no_host_address(make_netns):
    """The bridge and VXLAN device varpd makes never get an IPv6 link-local, and the host's IPv4
    stack neither answers ARP nor accepts packets through them (issue #11, 6)."""
    ns = make_netns("iso")
    await ensure_overlay(DeviceSpec("vx0", 4242, V4, bridge="br0"), netns=ns)
    for dev in ("vx0", "br0"):
        assert _host_presence(ns, dev) == ([], "none", "1", "8"), dev
    assert link_json("br0", ns)["linkinfo"]["info_data"]["mcast_snooping"] == 0  # no all-snoopers reports


async def test_adopting_devices_of_an_older_varpd_removes_their_link_local(make_netns):
    ns = make_netns("isoa")
    sh("ip", "-n", ns, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", ns, "link", "add", "vx0", "type", "vxlan", "id", "4242", "local", str(V4), "dstport", "4789",
       "nolearning", "proxy", "l2miss", "l3miss")
    sh("ip", "-n", ns, "link", "set", "vx0", "master", "br0")
    for dev in ("vx0", "br0"):
        sh("ip", "-n", ns, "link", "set", dev, "up")
    sh("sysctl", "-qw", "net.ipv6.conf.br0.accept_dad=0", ns=ns)
    assert any(a.startswith("fe80:") for a in _host_presence(ns, "br0")[0])  # what an older varpd left
    await ensure_overlay(DeviceSpec("vx0", 4242, V4, bridge="br0"), netns=ns)
    for dev in ("vx0", "br0"):
        assert _host_presence(ns, dev) == ([], "none", "1", "8"), dev
    assert link_json("br0", ns)["linkinfo"]["info_data"]["mcast_snooping"] == 0  # no all-snoopers reports
