from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from ipaddress import IPv4Address

import pytest

from varpd_kmod import (
    BPF_ARP_NDP_DHCP,
    BPF_DHCP4,
    FdbEntry,
    FrameTap,
    KernelTables,
    KmodError,
)

from _kmod_helpers import ash, sh

pytestmark = pytest.mark.integration

DHCP_SEND = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"gv0")
s.bind(("0.0.0.0", int(sys.argv[1])))
s.sendto(b"\x01\x01\x06\x00" + b"\x00" * 236 + b"\x63\x82\x53\x63\xff", ("255.255.255.255", int(sys.argv[2])))
"""


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def classify(frame: bytes) -> str:
    et = struct.unpack("!H", frame[12:14])[0]
    if et == 0x0806:
        return "arp"
    if et == 0x86DD and frame[20] == 58:
        return "icmpv6"
    if et == 0x0800 and frame[23] == 17:
        ihl = (frame[14] & 0xF) * 4
        sport, dport = struct.unpack("!HH", frame[14 + ihl : 14 + ihl + 4])
        return f"udp {sport}->{dport}"
    return f"other {et:#x}"


async def recv_until(tap: FrameTap, pred, timeout: float = 5.0, seen: list | None = None):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"expected frame not captured; saw {seen}")
        try:
            fr = await asyncio.wait_for(tap.recv(), remaining)
        except asyncio.TimeoutError:
            raise AssertionError(f"expected frame not captured; saw {seen}") from None
        if seen is not None:
            seen.append(classify(fr.data))
        if pred(fr):
            return fr


async def test_capture_dhcp_broadcast_on_bridge(topo, python):
    with FrameTap("br0", topo.host, bpf=BPF_ARP_NDP_DHCP, direction="in") as tap:
        # not DHCP: must be filtered out by the BPF program
        await ash(python, "-c", DHCP_SEND, "5000", "5001", ns=topo.guest, check=True)
        await ash(python, "-c", DHCP_SEND, "68", "67", ns=topo.guest, check=True)
        seen: list = []
        fr = await recv_until(tap, lambda f: classify(f.data) == "udp 68->67", seen=seen)
        assert not fr.outgoing
        assert fr.ifindex == tap.ifindex
        assert fr.data[0:6] == b"\xff" * 6
        assert fr.data[6:12] == mac_bytes(topo.guest_mac)
        assert all(kind in ("arp", "icmpv6", "udp 68->67") for kind in seen), seen


async def test_inject_on_bridge_reaches_guest(topo, python):
    # make sure the bridge has learned the guest's MAC on hv0
    await ash(python, "-c", DHCP_SEND, "68", "67", ns=topo.guest, check=True)
    fdb = sh("bridge", "-n", topo.host, "fdb", "show", "br", "br0")
    assert any(topo.guest_mac in l and "dev hv0" in l for l in fdb.splitlines()), fdb
    src_mac = "02:00:00:00:00:77"
    arp = (
        mac_bytes(topo.guest_mac) + mac_bytes(src_mac) + b"\x08\x06"
        + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)  # who-has request
        + mac_bytes(src_mac) + IPv4Address("10.23.0.77").packed
        + b"\x00" * 6 + IPv4Address("10.23.0.1").packed
    )
    arp += b"\x00" * (60 - len(arp))
    with FrameTap("br0", topo.host, direction="both") as tap:
        await tap.send(arp)
        with pytest.raises(KmodError):
            await tap.send(b"\x00" * 1519)
    for _ in range(50):
        out = sh("ip", "-n", topo.guest, "neigh", "show", "10.23.0.77", "dev", "gv0")
        if src_mac in out:
            break
        await asyncio.sleep(0.05)
    assert f"lladdr {src_mac}" in out, out


async def test_inject_on_vxlan_is_encapsulated(topo):
    remote_mac = "02:00:00:00:00:99"
    kt = KernelTables(topo.handle.ifindex, netns=topo.host)
    try:
        assert await kt.add_fdb([FdbEntry(remote_mac, IPv4Address("192.0.2.2"), 4789)]) == []
    finally:
        kt.close()
    sh("ping", "-c", "1", "-W", "1", "192.0.2.2", ns=topo.host)  # resolve the underlay neighbour
    frame = mac_bytes(remote_mac) + mac_bytes("02:00:00:00:00:98") + b"\x88\xb5" + b"varpd-kmod-test".ljust(46, b"\x00")
    with FrameTap("ul0", topo.host, direction="out") as ul, FrameTap("vx0", topo.host, direction="out") as vxo, \
            FrameTap("vx0", topo.host, capture=False) as vx_send:
        await vx_send.send(frame)
        fr = await recv_until(vxo, lambda f: f.data == frame)
        assert fr.outgoing
        enc = await recv_until(
            ul, lambda f: f.data[12:14] == b"\x08\x00" and f.data[23] == 17 and f.data[36:38] == b"\x12\xb5"
        )
        assert enc.outgoing
        assert IPv4Address(enc.data[26:30]) == IPv4Address("192.0.2.1")
        assert IPv4Address(enc.data[30:34]) == IPv4Address("192.0.2.2")
        vxlan_hdr = enc.data[42:50]
        assert vxlan_hdr[0] & 0x08 and int.from_bytes(vxlan_hdr[4:7], "big") == 42
        assert enc.data[50:] == frame


def _packet_sockets(ns: str) -> list[dict]:
    """/proc/net/packet of `ns`: one dict per packet socket (Proto, Iface, R = registered as a tap)."""
    lines = sh("cat", "/proc/net/packet", ns=ns).splitlines()
    head = lines[0].split()
    return [dict(zip(head, line.split())) for line in lines[1:]]


async def test_send_only_tap_is_not_a_tap_of_the_device(topo):
    """A send-only tap receives nothing and is not registered with the device, so frames crossing
    the VXLAN port are not cloned and filtered for it; a capturing tap is registered."""
    before = _packet_sockets(topo.host)
    with FrameTap("vx0", topo.host, capture=False) as send_only:
        added = [s for s in _packet_sockets(topo.host) if s not in before]
        assert [(s["Proto"], s["R"]) for s in added] == [("0000", "0")]
        with pytest.raises(KmodError, match="send-only"):
            await send_only.recv()
    with FrameTap("vx0", topo.host, direction="out"):
        added = [s for s in _packet_sockets(topo.host) if s not in before]
        assert [(s["Proto"], s["R"]) for s in added] == [("0003", "1")]  # ETH_P_ALL, running
    with pytest.raises(ValueError, match="send-only"):
        FrameTap("vx0", topo.host, capture=False, bpf=BPF_DHCP4)


async def test_tap_errors():
    with pytest.raises(KmodError):
        FrameTap("nope0", "vk-missing-does-not-exist")
    with pytest.raises(ValueError):
        FrameTap("lo", direction="sideways")


TAGGED_SEND = r"""
import sys
from scapy.all import ARP, Dot1Q, Ether, sendp
sendp(Ether(src=sys.argv[1], dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=int(sys.argv[2]), prio=3) /
      ARP(hwsrc=sys.argv[1], psrc="10.23.0.1", pdst="10.23.0.77"), iface="gv0", verbose=False)
"""


async def test_capture_puts_back_the_vlan_tag_and_says_which_checksums_are_partial(topo, python):
    """PACKET_AUXDATA: the 802.1Q tag the kernel stripped is re-inserted where it was on the wire
    (frame built by scapy), and a local UDP sender's offloaded checksum is reported partial."""
    pytest.importorskip("scapy")
    with FrameTap("br0", topo.host, bpf=BPF_ARP_NDP_DHCP, direction="in") as tap:
        await ash(python, "-c", TAGGED_SEND, topo.guest_mac, "5", ns=topo.guest, check=True)
        seen: list = []
        fr = await recv_until(tap, lambda f: f.data[12:14] == b"\x81\x00", seen=seen)
        assert fr.vlan == 5 and fr.data[14:16] == bytes((0x60, 5))  # PCP 3, VID 5
        assert fr.data[16:18] == b"\x08\x06" and fr.pkttype == 1  # PACKET_BROADCAST
        assert abs(fr.timestamp - time.time()) < 30
        await ash(python, "-c", DHCP_SEND, "68", "67", ns=topo.guest, check=True)
        fr = await recv_until(tap, lambda f: classify(f.data) == "udp 68->67")
        assert fr.vlan is None and fr.csum_partial, "a UDP socket's datagram over veth carries a partial checksum"


@pytest.mark.parametrize("kind", ["tap", "capture"])
async def test_closing_a_tap_while_recv_waits_frees_its_fd_for_the_next_socket(topo, kind):
    """close() while a recv() waits: the fd number is reused at once (an overlay's devices re-made,
    a netlink transport opened); the waiting task must neither unregister that socket nor die with
    "File descriptor N is used by transport".  The same for snoop's PacketCapture.recv_batch()."""
    loop = asyncio.get_running_loop()
    from varpd_kmod.capture import PacketCapture
    from varpd_kmod.frames import bpf_udp_port
    quiet = bpf_udp_port(9)  # nothing comes: the wait really waits
    if kind == "tap":
        tap = FrameTap("br0", topo.host, direction="in", bpf=quiet)
        waiter = asyncio.ensure_future(tap.recv())
    else:
        tap = PacketCapture("br0", topo.host, bpf=quiet)
        waiter = asyncio.ensure_future(tap.recv_batch())
    fd = tap.fileno()
    await asyncio.sleep(0.05)
    tap.close()
    waiter.cancel()  # what GuestFrames.close() does, after closing its taps
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if a.fileno() != fd:  # take the very fd number, as the next socket of the daemon would
            os.dup2(a.fileno(), fd)
            a.close()
            a = socket.socket(fileno=fd)
        got = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: type("P", (asyncio.DatagramProtocol,), {"datagram_received": lambda s, d, addr: got.set_result(d)})(),
            sock=a)
        with pytest.raises((asyncio.CancelledError, KmodError)):
            await waiter
        b.send(b"still read")
        assert await asyncio.wait_for(got, 2) == b"still read"
        transport.close()
    finally:
        b.close()
