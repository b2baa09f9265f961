"""kmod-shim in other namespaces: device work there forks nothing, the listen address and its
interface are found (IPv6 DAD included), address events arrive on the miss socket, and a
namespace made again under the same name is told apart from the old one."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from ipaddress import IPv4Address, IPv6Address

import pytest

from varpd_kmod import AddressChange, DeviceSpec, KmodError, MissListener, delete_overlay, ensure_overlay
from varpd_kmod._netns import netns_identity
from varpd_kmod.underlay import link_mac, local_address, set_link_mtu

from _kmod_helpers import link_json, sh

pytestmark = pytest.mark.integration


@pytest.fixture
def ns():
    """One `n15k-` namespace with a veth pair eth0 (MTU 1400, up) ↔ peer0, both in it."""
    name = f"n15k-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "add", "eth0", "mtu", "1400", "type", "veth", "peer", "name", "peer0")
        sh("ip", "-n", name, "link", "set", "peer0", "up")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


async def test_device_work_in_a_namespace_starts_no_child(ns):
    """pyroute2's AsyncIPRoute(netns=) forks a helper; its exit (SIGCHLD) and the signal wakeup fd it
    inherits reach the daemon's loop. The shim makes its sockets in a thread instead."""
    loop = asyncio.get_running_loop()
    children: list[int] = []
    loop.add_signal_handler(signal.SIGCHLD, lambda: children.append(1))
    try:
        handle = await ensure_overlay(DeviceSpec("vx0", 77, IPv4Address("192.0.2.1"), bridge="br0"), netns=ns)
        mac = await link_mac("br0", ns)
        await asyncio.sleep(0.1)
        assert children == []
    finally:
        loop.remove_signal_handler(signal.SIGCHLD)
    assert mac == link_json("br0", ns)["address"]
    await delete_overlay(handle, netns=ns)
    assert link_json("vx0", ns) is None and link_json("br0", ns) is None
    with pytest.raises(KmodError, match="does not exist"):
        await ensure_overlay(DeviceSpec("vx0", 77, IPv4Address("192.0.2.1")), netns="n15k-no-such-namespace")


async def test_local_address_names_the_interface_and_its_mtu(ns):
    v4, v6 = IPv4Address("192.0.2.7"), IPv6Address("2001:db8::7")
    assert await local_address(v4, ns) is None
    sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", "eth0")
    found = await local_address(v4, ns)
    assert (found.ifname, found.mtu, found.usable) == ("eth0", 1400, True), found
    assert await local_address(v4) is None  # not in the test's own namespace
    sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", "eth0")  # DAD runs: not yet an address to send from
    assert (await local_address(v6, ns)).usable is False
    sh("ip", "-n", ns, "addr", "del", f"{v6}/64", "dev", "eth0")
    sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", "eth0", "nodad")
    assert (await local_address(v6, ns)).usable is True
    await set_link_mtu("eth0", 1300, ns)
    assert (await local_address(v6, ns)).mtu == 1300


async def test_address_events_arrive_on_the_miss_socket(ns):
    with MissListener(ns, addresses=True) as listener:
        sh("ip", "-n", ns, "addr", "add", "198.51.100.9/24", "dev", "eth0")
        sh("ip", "-n", ns, "addr", "del", "198.51.100.9/24", "dev", "eth0")
        seen: list[AddressChange] = []
        async with asyncio.timeout(5):
            while len(seen) < 2:
                seen += [e for e in await listener.next_batch() if isinstance(e, AddressChange)]
    index = link_json("eth0", ns)["ifindex"]
    assert [(e.ifindex, e.ip, e.added) for e in seen] == [(index, IPv4Address("198.51.100.9"), True),
                                                          (index, IPv4Address("198.51.100.9"), False)]
    with MissListener(ns) as listener:  # without addresses=True: misses only
        sh("ip", "-n", ns, "addr", "add", "198.51.100.9/24", "dev", "eth0")
        await asyncio.sleep(0.1)
        assert listener.poll() == []


def test_a_namespace_made_again_is_another_namespace(ns):
    first = netns_identity(ns)
    assert first is not None and netns_identity("n15k-no-such-namespace") is None
    sh("ip", "netns", "del", ns)
    assert netns_identity(ns) is None
    sh("ip", "netns", "add", ns)
    assert netns_identity(ns) not in (None, first)
