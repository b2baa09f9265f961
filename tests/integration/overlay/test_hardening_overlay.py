"""Hardening of a running push-mode overlay: a TCP stream survives `kill -9` + restart of the
daemons with no kernel entry ever missing, guests cannot poison the mapping with ARP, NDP
or DHCP frames that claim someone else's address, nor take over another guest's MAC in the
bridges with forged Ethernet sources. One 3-host lab for the module.
"""
from __future__ import annotations

import ipaddress
import json
import signal
import struct
import subprocess
import sys
import time

import pytest

from _overlay_helpers import fdb, neigh, overlay_lab, ping, ping_stats, wait_for


@pytest.fixture(scope="module")
def ov(tmp_path_factory):
    with overlay_lab(tmp_path_factory.mktemp("hard"), tag="ho", mode="push") as ov:
        ov.wait_pushed()
        yield ov


def tables(ov, host) -> tuple[dict, dict]:
    """What varpd programmed on `host`'s VXLAN device: mac → (dst, state), ip → (lladdr, state)."""
    f = {m: (e["dst"], e.get("state")) for m, e in fdb(ov.lab, host).items()}
    n = {ip: (e.get("lladdr"), tuple(e.get("state", []))) for ip, e in neigh(ov.lab, host).items()}
    return f, n


# -- restart under traffic ---------------------------------------------------------------------
_STREAM_SERVER = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(30)
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(20); n = 0; gap = 0.0; last = time.monotonic()
try:
    while True:
        b = c.recv(1 << 16)
        now = time.monotonic(); gap = max(gap, now - last); last = now
        if not b:
            break
        n += len(b)
except OSError as e:
    print("error", repr(e), n, flush=True); sys.exit(1)
c.close()
print(n, round(gap, 3), flush=True)
"""

_STREAM_CLIENT = r"""
import socket, sys, time
deadline = time.monotonic() + 10
while True:
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
c.settimeout(20); chunk = bytes(16384); n = 0; end = time.monotonic() + float(sys.argv[3])
print("connected", flush=True)
try:
    while time.monotonic() < end:
        c.sendall(chunk); n += len(chunk); time.sleep(0.02)
    c.shutdown(socket.SHUT_WR); c.recv(1)
except OSError as e:
    print("error", repr(e), n, flush=True); sys.exit(1)
c.close()
print(n, flush=True)
"""


def test_tcp_stream_survives_kill_9_and_restart_without_flushing(ov):
    lab, h1, h2 = ov.lab, ov.h1, ov.h2
    restarted = (h1, h2)  # both ends of the stream
    want = {h.name: tables(ov, h) for h in restarted}
    server = lab.popen(ov.g(h2), sys.executable, "-c", _STREAM_SERVER, h2.guest_ip4, "5301")
    assert server.stdout.readline().strip() == "listening", server.stderr.read()
    client = lab.popen(ov.g(h1), sys.executable, "-c", _STREAM_CLIENT, h2.guest_ip4, "5301", "6")
    assert client.stdout.readline().strip() == "connected", client.stderr.read()

    missing: list[str] = []

    def sample() -> None:
        for h in restarted:
            have_f, have_n = tables(ov, h)
            want_f, want_n = want[h.name]
            missing.extend(f"{h.name} fdb {m}: {have_f.get(m)}" for m, v in want_f.items() if have_f.get(m) != v)
            missing.extend(f"{h.name} neigh {ip}: {have_n.get(ip)}" for ip, v in want_n.items()
                           if have_n.get(ip) != v)

    t_end = time.monotonic() + 1.5
    while time.monotonic() < t_end:
        sample()
    for h in restarted:
        assert lab.stop_varpd(h, signal.SIGKILL) == -signal.SIGKILL
    sample()
    for h in restarted:
        ov.start(h)
    for h in restarted:
        lab.wait_ready(h)
    while client.poll() is None:
        sample()
        time.sleep(0.05)
    for _ in range(3):  # the restarted daemons' first reconcile passes
        time.sleep(0.4)
        sample()

    sent_out, sent_err = client.communicate(timeout=20)
    got_out, got_err = server.communicate(timeout=20)
    assert client.returncode == 0, f"sender failed (connection reset?): {sent_out}{sent_err}"
    assert server.returncode == 0, f"receiver failed: {got_out}{got_err}"
    received, max_gap = got_out.split()
    assert int(received) == int(sent_out.strip()), f"sent {sent_out.strip()}, received {received}"
    assert float(max_gap) < 3.0, f"the stream stalled for {max_gap}s across the restart"
    assert not missing, "kernel entries went missing or changed across the restart:\n" + "\n".join(missing[:20])
    assert {h.name: tables(ov, h) for h in restarted} == want


# -- poisoning -------------------------------------------------------------------------------------
def _mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def garp(src_mac: str, claimed_ip: str, op: int) -> bytes:
    """Gratuitous ARP (request or reply): `claimed_ip` is at `src_mac`."""
    ip = ipaddress.IPv4Address(claimed_ip).packed
    tha = bytes(6) if op == 1 else b"\xff" * 6
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, _mac(src_mac), ip, tha, ip)
    return (b"\xff" * 6 + _mac(src_mac) + b"\x08\x06" + body).ljust(60, b"\0")


def unsolicited_na(src_mac: str, src_ip: str, claimed_ip: str) -> bytes:
    """An overriding NA to all nodes: `claimed_ip` is at `src_mac`."""
    src, dst = ipaddress.IPv6Address(src_ip).packed, ipaddress.IPv6Address("ff02::1").packed
    icmp = struct.pack("!BBHI16sBB6s", 136, 0, 0, 0x20000000, ipaddress.IPv6Address(claimed_ip).packed,
                       2, 1, _mac(src_mac))
    csum = _csum(src + dst + struct.pack("!I3xB", len(icmp), 58) + icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ip6 = struct.pack("!IHBB16s16s", 0x60000000, len(icmp), 58, 255, src, dst)
    return b"\x33\x33\x00\x00\x00\x01" + _mac(src_mac) + b"\x86\xdd" + ip6 + icmp


def dhcp_request(src_mac: str, chaddr: str, wanted_ip: str) -> bytes:
    """A DHCPREQUEST sent by one guest for another's MAC and IP."""
    opts = bytes((53, 1, 3, 50, 4)) + ipaddress.IPv4Address(wanted_ip).packed + b"\xff"
    bootp = (struct.pack("!BBBBIHH4s4s4s4s16s", 1, 1, 6, 0, 0x1234, 0, 0x8000, bytes(4), bytes(4), bytes(4),
                         bytes(4), _mac(chaddr).ljust(16, b"\0")) + bytes(192) + b"\x63\x82\x53\x63" + opts)
    bootp = bootp.ljust(300, b"\0")
    udp = struct.pack("!HHHH", 68, 67, 8 + len(bootp), 0) + bootp
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes(4), b"\xff" * 4)
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return b"\xff" * 6 + _mac(src_mac) + b"\x08\x00" + hdr + udp


_SEND = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0))
for _ in range(int(sys.argv[1])):
    for frame in sys.argv[2:]:
        s.send(bytes.fromhex(frame))
"""


def send_frames(ov, ns: str, frames: list[bytes], repeat: int = 3) -> None:
    ov.lab.exec(ns, sys.executable, "-c", _SEND, str(repeat), *(f.hex() for f in frames))


def counters(ov, host) -> dict:
    return ov.lab.api(host, "/v1/overlays/vx23")[1]["counters"]


def resolved_mac(ov, ns: str, ip: str) -> str | None:
    out = ov.lab.exec(ns, "ip", "neigh", "show", ip, "dev", "eth0").stdout.split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else None


def test_guest_cannot_poison_the_mapping(ov):
    attacker, other, victim = ov.h1, ov.h2, ov.h3
    before = {h.name: tables(ov, h) for h in ov.hosts}
    mac = attacker.guest_mac
    frames = [
        garp(mac, victim.guest_ip4, op=1),  # "10.55.55.3 is at me"
        garp(mac, victim.guest_ip4, op=2),
        garp(mac, other.guest_ip4, op=1),
        unsolicited_na(mac, attacker.guest_ip6, victim.guest_ip6),
        dhcp_request(mac, victim.guest_mac, victim.guest_ip4),  # someone else's MAC and IP
    ]
    dhcp_seen = counters(ov, attacker).get("dhcp_frames", 0)
    send_frames(ov, ov.g(attacker), frames)
    wait_for(lambda: counters(ov, attacker).get("dhcp_frames", 0) > dhcp_seen, 5, "varpd to see the forged DHCP")
    time.sleep(1.5)  # longer than reconcile_interval: any learned change would have been applied
    after = {h.name: tables(ov, h) for h in ov.hosts}
    assert after == before, "a guest's frames changed the kernel entries varpd programmed"

    # varpd's answers (the kernel proxy, from the entries varpd programmed) still give the backend's MAC
    for asker in (attacker, other):
        lab_ns = ov.g(asker)
        ov.lab.exec(lab_ns, "ip", "neigh", "flush", "dev", "eth0")
        ping(ov.lab, lab_ns, victim.guest_ip4)
        ping(ov.lab, lab_ns, victim.guest_ip6, v6=True)
        assert resolved_mac(ov, lab_ns, victim.guest_ip4) == victim.guest_mac
        assert resolved_mac(ov, lab_ns, victim.guest_ip6) == victim.guest_mac
    assert {h.name: tables(ov, h) for h in ov.hosts} == before


# -- Ethernet source forging (port security) ---------------------------------------------------
_FORGE = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((sys.argv[1], 0))
frames = [bytes.fromhex(f) for f in sys.argv[3:]]
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    for f in frames:
        s.send(f)
    time.sleep(0.005)
"""


def bridge_port_of(ov, host, mac: str) -> str | None:
    """The bridge port `host`'s br0 forwards `mac` to (None: unknown, would be flooded)."""
    out = ov.lab.exec(ov.lab.host_ns(host), "bridge", "-j", "fdb", "show", "br", "br0").stdout
    ports = [e["ifname"] for e in json.loads(out) if e.get("mac") == mac and "self" not in e.get("flags", [])]
    return ports[0] if ports else None


def test_a_guest_cannot_take_over_another_guests_mac(ov):
    """Frames with another guest's Ethernet source MAC move no bridge entry. From a guest (unicast
    across the overlay to the victim, broadcast on its own bridge) its port drops them (locked,
    learning off); from a host without such a port (sent straight into its VXLAN device) the
    victim's host keeps the victim's MAC where it is pinned (static, sticky). Without that, the
    victim's own bridge learns the victim behind the VXLAN port and drops all traffic to it."""
    attacker, other, victim = ov.h1, ov.h2, ov.h3
    ping(ov.lab, ov.g(other), victim.guest_ip4)  # the victim has sent: even a learning bridge knows its port
    assert bridge_port_of(ov, victim, victim.guest_mac) == "vnic0"
    v = _mac(victim.guest_mac)
    unicast, broadcast = v + v + b"\x88\xb5" + bytes(46), b"\xff" * 6 + v + b"\x88\xb5" + bytes(46)
    senders = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", _FORGE, dev, "4",
                                 *(f.hex() for f in frames)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for ns, dev, frames in ((ov.g(attacker), "eth0", (unicast, broadcast)),
                                       (ov.lab.host_ns(attacker), "vx23", (unicast,)))]
    try:
        time.sleep(0.5)
        res = ov.lab.exec(ov.g(other), "ping", "-n", "-c", "10", "-i", "0.2", "-W", "1", victim.guest_ip4,
                          check=False, timeout=20)
        seen = {h.name: bridge_port_of(ov, h, victim.guest_mac) for h in (attacker, victim)}
    finally:
        for p in senders:
            p.wait(10)
    for p in senders:
        assert p.returncode == 0, p.stderr.read()
    assert seen[victim.name] == "vnic0", "a forged frame moved the victim's MAC on its own host"
    assert seen[attacker.name] != "vnic0", "the attacker's bridge learned the victim's MAC on the attacker's port"
    sent, received = ping_stats(res.stdout)
    assert received == sent, f"the victim lost traffic while its MAC was forged:\n{res.stdout}"
