"""What varpd answers on an on-demand overlay's bridge besides the kernel, judged by scapy and
tshark in the guest: one reply per ARP (the kernel's proxy answers all but the first), replies on
the request's VLAN, and a flooding guest rate-limited without stalling the admin API.
"""
from __future__ import annotations

import statistics
import sys
import time

import pytest

from _overlay_helpers import overlay_lab, ping, require, wait_for
from test_dhcp_clients import capture

pytestmark = pytest.mark.integration

ARPS = r"""
import sys, time
from scapy.all import ARP, Dot1Q, Ether, sendp
mac, me, target, vlan, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
tag = [Dot1Q(vlan=vlan)] if vlan else []
frame = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
for layer in tag:
    frame = frame / layer
frame = frame / ARP(hwsrc=mac, psrc=me, pdst=target)
for i in range(count):
    sendp(frame, iface="eth0", verbose=False)
    time.sleep(1.0)
"""

FLOOD = r"""
import socket, struct, sys, time
rate, seconds, src, me, target = int(sys.argv[1]), float(sys.argv[2]), bytes.fromhex(sys.argv[3]), sys.argv[4], sys.argv[5]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0))
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src, socket.inet_aton(me), bytes(6), socket.inet_aton(target))
frame = b"\xff" * 6 + src + b"\x08\x06" + arp + bytes(18)
batch, sent, t0 = rate // 100, 0, time.monotonic()
while time.monotonic() - t0 < seconds:
    for _ in range(batch):
        s.send(frame)
    sent += batch
    ahead = sent / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
print(sent, flush=True)
"""


@pytest.fixture(scope="module")
def ov(tmp_path_factory):
    require("tcpdump", "tshark")
    pytest.importorskip("scapy")
    with overlay_lab(tmp_path_factory.mktemp("gframes"), tag="f", mode="on-demand") as ov:
        yield ov


def arp_replies(cap, target: str, tagged: bool | None = None) -> list[list[str]]:
    vlan = {None: "", True: " && vlan", False: " && !vlan"}[tagged]
    return cap.fields(f"arp.opcode == 2 && arp.src.proto_ipv4 == {target}{vlan}", "arp.src.hw_mac", "vlan.id")


def test_each_arp_gets_one_reply(ov):
    """The first ARP for a remote guest is answered by varpd (its miss was dropped), every later one
    by the kernel's proxy from the entry varpd programmed: never both."""
    g1, target = ov.g(ov.h1), ov.h2.guest_ip4
    with capture(ov, g1, "one-reply") as cap:
        ov.lab.exec(g1, sys.executable, "-c", ARPS, ov.h1.guest_mac, ov.h1.guest_ip4, target, "0", "4", timeout=60)
        time.sleep(0.5)
    replies = arp_replies(cap, target)
    assert [r[0] for r in replies] == [ov.h2.guest_mac] * 4, f"4 requests, replies: {replies}"


def test_tagged_arp_is_answered_on_its_vlan(ov):
    """The kernel strips the 802.1Q tag before the tap reads the request; varpd puts its answer back
    on the request's VLAN (the kernel's own proxy answers untagged: README)."""
    g1, target = ov.g(ov.h1), ov.h3.guest_ip4
    with capture(ov, g1, "tagged-arp") as cap:
        ov.lab.exec(g1, sys.executable, "-c", ARPS, ov.h1.guest_mac, ov.h1.guest_ip4, target, "5", "1", timeout=60)
        time.sleep(0.5)
    tagged = arp_replies(cap, target, tagged=True)
    assert tagged == [[ov.h3.guest_mac, "5"]], f"tagged replies: {tagged}; all: {arp_replies(cap, target)}"


NS = r"""
import sys
from scapy.all import Ether, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6, sendp
from scapy.utils6 import in6_getnsma, in6_getnsmac
from socket import AF_INET6, inet_ntop, inet_pton
mac, me, target = sys.argv[1], sys.argv[2], sys.argv[3]
group = in6_getnsma(inet_pton(AF_INET6, target))
sendp(Ether(src=mac, dst=in6_getnsmac(group)) / IPv6(src=me, dst=inet_ntop(AF_INET6, group), hlim=255) /
      ICMPv6ND_NS(tgt=target) / ICMPv6NDOptSrcLLAddr(lladdr=mac), iface="eth0", verbose=False)
"""


def test_first_neighbor_solicitation_is_answered_with_a_good_checksum(ov):
    """On-demand: varpd answers the NS whose miss the kernel dropped; tshark checks the NA's ICMPv6
    checksum at the guest that receives it."""
    g1, target = ov.g(ov.h1), ov.h3.guest_ip6
    with capture(ov, g1, "first-ns", bpf="icmp6") as cap:
        ov.lab.exec(g1, sys.executable, "-c", NS, ov.h1.guest_mac, ov.h1.guest_ip6, target, timeout=60)
        wait_for(lambda: cap.fields("icmpv6.type == 136", "frame.number"), 5, "the NA")
    cap.stop()
    na = cap.fields(f"icmpv6.type == 136 && icmpv6.nd.na.target_address == {target}",
                    "icmpv6.opt.linkaddr", "icmpv6.checksum.status")
    assert na == [[ov.h3.guest_mac, "1"]], f"NA (target MAC, checksum status 1 = good): {na}"


def _admin_latency(ov, host) -> float:
    t0 = time.monotonic()
    status, _ = ov.lab.api(host, "/v1/overlays/vx23", timeout=30)
    assert status == 200
    return time.monotonic() - t0


def test_an_arp_flood_is_rate_limited_and_the_admin_api_keeps_answering(ov):
    """10k ARP/s from one guest: its excess is dropped and counted, and the frame loop yields, so
    the admin API keeps answering (a generous bound, not a performance target)."""
    g1, target = ov.g(ov.h1), ov.h2.guest_ip4
    ping(ov.lab, g1, target)  # resolved: the kernel answers, varpd only reads
    before = ov.lab.api(ov.h1, "/v1/overlays/vx23")[1]["counters"].get("frames_rate_limited", 0)
    flood = ov.lab.popen(g1, sys.executable, "-c", FLOOD, "10000", "6", ov.h1.guest_mac.replace(":", ""),
                         ov.h1.guest_ip4, target)
    try:
        time.sleep(1.0)
        latencies = []
        while flood.poll() is None and len(latencies) < 20:
            latencies.append(_admin_latency(ov, ov.h1))
            time.sleep(0.1)
        out, err = flood.communicate(timeout=30)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    assert int(out) > 30_000, f"the flood did not run: {out}{err}"
    assert len(latencies) >= 5, latencies
    assert statistics.median(latencies) < 1.0, f"admin latency under flood: {latencies}"
    counters = ov.lab.api(ov.h1, "/v1/overlays/vx23")[1]["counters"]
    assert counters.get("frames_rate_limited", 0) - before > 1000, counters
    status, metrics = ov.lab.api(ov.h1, "/metrics")
    assert status == 200
    line = next(l for l in str(metrics).splitlines() if l.startswith("varpd_frames_dropped_total") and "rate_limited" in l)
    assert float(line.split()[-1]) > 1000, line
    ping(ov.lab, g1, target)
