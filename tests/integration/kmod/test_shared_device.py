"""The shared-device pieces this kernel has (varpd_kmod.shared_device), judged by iproute2 and scapy.

One namespace for the module: an `external vnifilter` VXLAN device on a veth underlay. Proven:
the device is what `ip -d link` calls `external vnifilter`; its VNI filter takes thousands of VNIs in
batches and `bridge vni` lists exactly them; the same MAC has a different remote in each of two VNIs
(`bridge fdb ... src_vni`), each VNI's KernelTables sees, replaces and deletes only its own; a VXLAN
packet for a VNI outside the filter is dropped on receive; a per-VNI device cannot come up on the
shared device's address and port; and on a kernel without VLAN filtering the VLAN-aware bridge is
refused in one line, leaving no device behind.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from ipaddress import ip_address

import pytest

from _kmod_helpers import sh

from varpd_kmod.netlink import KernelTables
from varpd_kmod.shared_device import (SharedDeviceSpec, SharedTables, VlanFilteringMissing, ensure_shared_vxlan,
                                      ensure_vlan_bridge)
from varpd_kmod.types import FdbEntry

pytestmark = pytest.mark.integration

VX, UL, LOCAL = "s14vx", "s14ul", ip_address("192.0.2.1")
MAC = "02:00:00:14:00:01"


@pytest.fixture(scope="module")
def ns():
    name = f"s14-sh-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "add", UL, "type", "veth", "peer", "name", "s14ur")
        sh("ip", "-n", name, "addr", "add", f"{LOCAL}/24", "dev", UL)
        sh("ip", "-n", name, "link", "set", UL, "up")
        sh("ip", "-n", name, "link", "set", "s14ur", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def spec() -> SharedDeviceSpec:
    return SharedDeviceSpec(VX, LOCAL, 4789, underlay_dev=UL)


def fdb_rows(ns: str) -> list[dict]:
    return [r for r in json.loads(sh("bridge", "-n", ns, "-j", "-d", "fdb", "show", "dev", VX))
            if r.get("mac") == MAC]


async def test_device_is_external_vnifilter_and_adopted(ns):
    dev = await ensure_shared_vxlan(spec(), ns)
    info = json.loads(sh("ip", "-n", ns, "-j", "-d", "link", "show", VX))[0]["linkinfo"]["info_data"]
    assert info.get("external") is True and info.get("vnifilter") is True and info["learning"] is False
    assert info["local"] == str(LOCAL) and info["port"] == 4789
    again = await ensure_shared_vxlan(spec(), ns)
    assert dev.created and not again.created and again.ifindex == dev.ifindex


async def test_vni_filter_takes_thousands_in_batches(ns):
    dev = await ensure_shared_vxlan(spec(), ns)
    with SharedTables(dev.ifindex, ns) as t:
        vnis = set(range(10000, 12000)) | {1010, 1020}
        assert await t.add_vnis(sorted(vnis)) == []
        assert await t.add_vnis([1010]) == []  # already there: not a failure
        listed = json.loads(sh("bridge", "-n", ns, "-j", "vni", "show", "dev", VX))[0]["vnis"]
        seen = set()
        for r in listed:
            seen.update(range(r["vni"], r.get("vniEnd", r["vni"]) + 1))
        assert seen == vnis == await t.dump_vnis()
        assert await t.del_vnis(range(10000, 12000)) == []
        assert await t.dump_vnis() == {1010, 1020}


async def test_same_mac_in_two_vnis_each_table_its_own(ns):
    dev = await ensure_shared_vxlan(spec(), ns)
    a, b = KernelTables(dev.ifindex, ns, src_vni=1010), KernelTables(dev.ifindex, ns, src_vni=1020)
    with a, b:
        ea, eb = FdbEntry(MAC, ip_address("192.0.2.2"), 4789), FdbEntry(MAC, ip_address("192.0.2.3"), 4789)
        assert await a.add_fdb([ea]) == [] and await b.add_fdb([eb]) == []
        rows = {(r.get("src_vni"), r["dst"]) for r in fdb_rows(ns)}
        assert rows == {(1010, "192.0.2.2"), (1020, "192.0.2.3")}
        assert await a.dump_fdb() == {ea: True} and await b.dump_fdb() == {eb: True}
        sh("bridge", "-n", ns, "fdb", "replace", MAC, "dev", VX, "dst", "192.0.2.4", "src_vni", "1010", "self")
        assert await a.take_fdb([ea]) == []  # deletes VNI 1010's entry of the MAC, not VNI 1020's
        assert {(r.get("src_vni"), r["dst"]) for r in fdb_rows(ns)} == {(1010, "192.0.2.2"), (1020, "192.0.2.3")}
        assert await a.del_fdb([ea]) == []
        assert {(r.get("src_vni"), r["dst"]) for r in fdb_rows(ns)} == {(1020, "192.0.2.3")}


async def test_vni_outside_the_filter_is_dropped_on_receive(ns):
    """scapy sends VXLAN packets for VNI 1010 (listed) and 3030 (not) to the device's port."""
    dev = await ensure_shared_vxlan(spec(), ns)
    with SharedTables(dev.ifindex, ns) as t:
        await t.add_vnis([1010])
    probe = (
        "from scapy.all import Ether, IP, UDP, VXLAN, ARP, sendp\n"
        "for vni in (1010, 3030, 3030):\n"
        "    inner = Ether(src='02:00:00:14:00:02', dst='ff:ff:ff:ff:ff:ff') / ARP(\n"
        "        psrc='10.0.0.2', pdst='10.0.0.1', hwsrc='02:00:00:14:00:02')\n"
        "    sendp(Ether(dst='ff:ff:ff:ff:ff:ff') / IP(src='192.0.2.2', dst='192.0.2.1') / UDP(sport=4000, dport=4789)"
        " / VXLAN(vni=vni, flags=8) / inner, iface='s14ur', verbose=0)\n"
    )
    before = int(sh("cat", f"/sys/class/net/{VX}/statistics/rx_packets", ns=ns))
    sh(sys.executable, "-c", probe, ns=ns)
    stats = {r["vni"]: r["stats"]["rx_pkts"]
             for r in json.loads(sh("bridge", "-n", ns, "-j", "-s", "vni", "show", "dev", VX))[0]["vnis"]}
    after = int(sh("cat", f"/sys/class/net/{VX}/statistics/rx_packets", ns=ns))
    assert stats[1010] >= 1 and 3030 not in stats
    assert after - before == 1, (before, after, stats)


def test_per_vni_device_cannot_share_the_address_and_port(ns):
    """Why the layout is the daemon's choice: a classic device on the same local IP and port never comes up."""
    sh("ip", "-n", ns, "link", "add", "s14vc", "type", "vxlan", "id", "5050", "local", str(LOCAL), "dstport", "4789",
       "nolearning")
    try:
        up = subprocess.run(["ip", "-n", ns, "link", "set", "s14vc", "up"], capture_output=True, text=True)
        assert up.returncode != 0 and "Address already in use" in up.stderr
    finally:
        sh("ip", "-n", ns, "link", "del", "s14vc")


async def test_vlan_aware_bridge_refused_without_vlan_filtering(ns):
    probe = subprocess.run(["ip", "-n", ns, "link", "add", "s14bp", "type", "bridge", "vlan_filtering", "1"],
                           capture_output=True, text=True)
    if probe.returncode == 0:
        sh("ip", "-n", ns, "link", "del", "s14bp")
        pytest.skip("this kernel has VLAN filtering: the refusal is not what it does")
    with pytest.raises(VlanFilteringMissing, match=r"^vxlan_layout=shared needs a VLAN-aware bridge .*"
                                                   r"CONFIG_BRIDGE_VLAN_FILTERING.*use vxlan_layout=per-vni$"):
        await ensure_vlan_bridge("s14br", ns)
    assert subprocess.run(["ip", "-n", ns, "link", "show", "s14br"], capture_output=True).returncode != 0
