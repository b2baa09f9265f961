"""`varpd snoop` on a live overlay: guest1 pings guest2 and host1's underlay shows the VXLAN frames.

One 3-host push-mode lab for the module; snoop runs as a real process in host1's namespace
(AF_PACKET + kernel BPF filter) and must end by itself on -c, or cleanly on SIGTERM/SIGINT.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from _overlay_helpers import overlay_lab, ping


@pytest.fixture(scope="module")
def ov(tmp_path_factory):
    with overlay_lab(tmp_path_factory.mktemp("snoop"), tag="sn", mode="push") as ov:
        ov.wait_pushed()
        yield ov


def start_snoop(ov, *args: str, **kwargs) -> subprocess.Popen:
    """`varpd snoop ARGS` in host1's namespace, returned once its socket is open."""
    proc = ov.lab.popen(ov.lab.host_ns(ov.h1), sys.executable, "-m", "varpd.cli.main", "snoop", *args, **kwargs)
    first = proc.stderr.readline()  # the capture socket and filter exist before this line is printed
    if "listening on" not in first:
        proc.kill()
        _, rest = proc.communicate()
        raise AssertionError(f"snoop did not start: {first}{rest}")
    return proc


def finish(proc: subprocess.Popen, sig: int | None = None, timeout: float = 10) -> tuple[int, str, str]:
    if sig is not None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"snoop did not stop within {timeout}s:\n{out}{err}") from None
    return proc.returncode, out, err


def test_snoop_decodes_the_ping_between_guests(ov):
    g1, g2 = ov.h1, ov.h2
    wanted = start_snoop(ov, "-i", "eth0", "--vni", "23", "-c", "6")
    other_vni = start_snoop(ov, "-i", "eth0", "--vni", "99")
    try:
        ping(ov.lab, ov.g(g1), g2.guest_ip4, count=3)
        rc, out, err = finish(wanted)  # -c 6: three requests and three replies end it
        rc99, out99, err99 = finish(other_vni, signal.SIGTERM)
    finally:
        for p in (wanted, other_vni):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 6 and all(" vni 23 " in line for line in lines), out
    request = (f"{g1.underlay_ip}:", f" > {g2.underlay_ip}:4789 vni 23 {g1.guest_mac} > {g2.guest_mac} IPv4 "
               f"{g1.guest_ip4} > {g2.guest_ip4} ICMP echo request id ")
    reply = (f"{g2.underlay_ip}:", f" > {g1.underlay_ip}:4789 vni 23 {g2.guest_mac} > {g1.guest_mac} IPv4 "
             f"{g2.guest_ip4} > {g1.guest_ip4} ICMP echo reply id ")
    for start, rest in (request, reply):
        assert any(line.split(" ", 1)[1].startswith(start) and rest in line for line in lines), \
            f"no line like {start}…{rest} in:\n{out}"
    assert "malformed" not in out, out
    assert "6 frames" in err

    # the same wire, filtered for a VNI nobody uses: nothing, and a clean exit on SIGTERM
    assert rc99 == 0 and out99 == "" and "0 frames" in err99, (rc99, out99, err99)


def test_snoop_on_all_interfaces_json_and_pcap(ov, tmp_path):
    """No -i: every interface of host1's namespace; --json lines and a -w pcap that -r reads back."""
    pcap = tmp_path / "h1.pcap"
    proc = start_snoop(ov, "--vni", "23", "--json", "-w", str(pcap))
    try:
        ping(ov.lab, ov.g(ov.h2), ov.h1.guest_ip4, count=2)
        rc, out, err = finish(proc, signal.SIGINT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, err
    objs = [json.loads(line) for line in out.splitlines()]
    kinds = {(o["outer_src"], o["outer_dst"], o["src_ip"], o["dst_ip"], o["info"].split(" id ")[0]) for o in objs}
    assert (ov.h2.underlay_ip, ov.h1.underlay_ip, ov.h2.guest_ip4, ov.h1.guest_ip4, "echo request") in kinds, objs
    assert (ov.h1.underlay_ip, ov.h2.underlay_ip, ov.h1.guest_ip4, ov.h2.guest_ip4, "echo reply") in kinds, objs
    assert all(o["vni"] == 23 and o["malformed"] is None for o in objs), objs

    again = subprocess.run([sys.executable, "-m", "varpd.cli.main", "snoop", "-r", str(pcap), "--json"],
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    assert [json.loads(line)["text"] for line in again.stdout.splitlines()] == [o["text"] for o in objs]


# -- third-party captures of the same wire, judged by tshark (issue #11) ------------------------------

def _start_capture(ov, ns: str, *cmd: str, ready: str) -> subprocess.Popen:
    """tcpdump/dumpcap in `ns`, returned once it says it is capturing."""
    proc = ov.lab.popen(ns, *cmd)
    line = proc.stderr.readline()
    while ready not in line:
        if not line:
            _, rest = proc.communicate()
            raise AssertionError(f"{cmd[0]} did not start: {rest}")
        line = proc.stderr.readline()
    return proc


def _overlay_traffic(ov) -> None:
    """IPv4 and IPv6 pings, one of 3000 bytes (inner IPv4 fragments), from guest1 to guest2."""
    g2 = ov.h2
    ping(ov.lab, ov.g(ov.h1), g2.guest_ip4, count=2)
    ov.lab.exec(ov.g(ov.h1), "ping", "-n", "-c", "1", "-s", "3000", "-W", "2", g2.guest_ip4, check=False)
    ping(ov.lab, ov.g(ov.h1), g2.guest_ip6, v6=True, count=2)


def test_snoop_agrees_with_tshark_on_tcpdump_and_dumpcap_captures(ov, tmp_path):
    """tcpdump -i any (Linux cooked v2), tcpdump -s 96, a file cut mid-record, and a two-interface
    dumpcap pcapng (Ethernet and cooked): snoop -r and tshark -r agree on every field tshark decodes."""
    from _overlay_helpers import require
    from _tshark import disagreements, snoop_json, tshark_rows
    require("tcpdump", "dumpcap", "tshark")
    ns = ov.lab.host_ns(ov.h1)
    files = {name: tmp_path / name for name in ("any.pcap", "snap.pcap", "two.pcapng")}
    procs = [
        _start_capture(ov, ns, "tcpdump", "-n", "-U", "--immediate-mode", "-i", "any", "-w", str(files["any.pcap"]), "udp", "port", "4789",
                       ready="listening on"),
        _start_capture(ov, ns, "tcpdump", "-n", "-U", "--immediate-mode", "-i", "eth0", "-s", "96", "-w", str(files["snap.pcap"]),
                       "udp", "port", "4789", ready="listening on"),
        _start_capture(ov, ns, "dumpcap", "-q", "-f", "udp port 4789", "-i", "eth0", "-i", "any",
                       "-w", str(files["two.pcapng"]), ready="Capturing on"),
    ]
    try:
        _overlay_traffic(ov)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            proc.communicate(timeout=20)

    header = files["any.pcap"].read_bytes()[20:24]
    assert int.from_bytes(header, "little") == 276, "tcpdump 4.99 -i any writes Linux cooked v2"
    data = files["any.pcap"].read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-30])
    for name, path in [*files.items(), ("cut.pcap", cut)]:
        objs, done = snoop_json(path)
        assert done.returncode == (1 if name == "cut.pcap" else 0), (name, done.stderr)
        rows = tshark_rows(path)
        assert disagreements(objs, rows) == [], name
        assert len(objs) >= 8, (name, [o["text"] for o in objs], done.stderr)
        assert not [o["text"] for o in objs if o["malformed"]], name
        kinds = {(o["protocol"], o["info"].split(" id ")[0]) for o in objs}
        assert {("ICMP", "echo request"), ("ICMP", "echo reply")} <= kinds, (name, kinds)
        if name != "snap.pcap":
            assert ("ICMPv6", "echo request") in kinds, (name, kinds)
        else:  # 96 bytes reach the inner ICMP echo header but end inside an inner IPv6 header
            assert all(o["truncated"].startswith("captured 96 of ") and o["src_mac"] for o in objs), objs
            assert all(o["info"].startswith(("echo", "IPv4 ")) for o in objs if o["network"] == "IPv4"), objs
            assert any(o["network"] == "IPv6" and "IPv6 header cut after" in o["truncated"]
                       for o in objs), [o["text"] for o in objs]
        if name == "cut.pcap":
            assert "is cut short mid-record" in done.stderr.splitlines()[-1], done.stderr
        if name == "two.pcapng":
            assert {o["outer_src"] for o in objs} == {ov.h1.underlay_ip, ov.h2.underlay_ip}
    # the dumpcap file has an Ethernet and a Linux cooked interface, and frames of both are shown
    from varpd.packet.pcapfile import CaptureReader
    with open(files["two.pcapng"], "rb") as f:
        interface_of = {r.number: r.interface for r in CaptureReader(f)}
    assert {interface_of[o["frame"]] for o in snoop_json(files["two.pcapng"])[0]} == {0, 1}


def test_snoop_on_the_underlay_bridge_is_promiscuous_and_reports_kernel_drops(ov):
    """-i BRIDGE sees the VXLAN the bridge forwards between hosts only in promiscuous mode (the
    default; -p not); a capture that cannot keep up says how many frames the kernel dropped."""
    lab, under = ov.lab, ov.lab.underlay

    def snoop_in(ns: str, *args: str) -> subprocess.Popen:
        proc = lab.popen(ns, sys.executable, "-m", "varpd.cli.main", "snoop", *args)
        first = proc.stderr.readline()
        assert "listening on" in first, first + proc.communicate()[1]
        return proc

    plain = snoop_in(under, "-p", "-i", "ubr0", "--vni", "23")  # alone: nothing else makes ubr0 promiscuous
    try:
        ping(lab, ov.g(ov.h1), ov.h3.guest_ip4, count=3)
        rc_p, out_p, err_p = finish(plain, signal.SIGTERM)
    finally:
        if plain.poll() is None:
            plain.kill()
            plain.wait()
    assert rc_p == 0 and out_p == "" and "0 frames shown" in err_p, (out_p, err_p)

    promisc = snoop_in(under, "-i", "ubr0", "--vni", "23", "-c", "4")
    try:
        flags = lab.exec(under, "ip", "-d", "link", "show", "ubr0").stdout
        assert "promiscuity 1" in flags, flags
        ping(lab, ov.g(ov.h1), ov.h3.guest_ip4, count=3)
        rc, out, err = finish(promisc)
    finally:
        if promisc.poll() is None:
            promisc.kill()
            promisc.wait()
    assert rc == 0 and len(out.splitlines()) == 4 and " vni 23 " in out, (out, err)
    assert "4 frames shown; " in err and " dropped by kernel" in err, err
    assert "promiscuity 0" in lab.exec(under, "ip", "-d", "link", "show", "ubr0").stdout

    # a stopped reader with a small buffer: the kernel drops, and the end line counts them
    slow = snoop_in(lab.host_ns(ov.h1), "-i", "eth0", "-B", "64", "--vni", "23")
    try:
        slow.send_signal(signal.SIGSTOP)
        lab.exec(ov.g(ov.h1), "ping", "-n", "-f", "-c", "400", "-s", "1200", ov.h2.guest_ip4, check=False)
        slow.send_signal(signal.SIGCONT)
        rc, out, err = finish(slow, signal.SIGINT)
    finally:
        if slow.poll() is None:
            slow.send_signal(signal.SIGCONT)
            slow.kill()
            slow.wait()
    import re
    match = re.search(r"(\d+) frames shown; (\d+) packets captured, (\d+) received by filter, (\d+) dropped by kernel",
                      err)
    assert rc == 0 and match, err
    shown, captured, received, dropped = map(int, match.groups())
    assert dropped > 0 and captured + dropped <= received and shown == len(out.splitlines()) == captured, err


_SEND_CRAFTED = r'''
import sys
from scapy.all import ICMP, IP, IPv6, IPv6ExtHdrHopByHop, UDP, VXLAN, Ether, Raw, fragment, get_if_hwaddr, sendp
dst_mac, inner = sys.argv[1], Ether(src="de:ad:be:ef:99:01", dst="de:ad:be:ef:99:02") / IP(src="10.99.0.1", dst="10.99.0.2")
src_mac = get_if_hwaddr("eth0")
big = IP(src="192.0.2.201", dst="192.0.2.200", id=0x4242) / UDP(sport=40000, dport=4789) / VXLAN(vni=99) / inner / ICMP(id=1, seq=1) / Raw(b"x" * 2000)
frames = [Ether(src=src_mac, dst=dst_mac) / f for f in fragment(big, fragsize=1000)]
frames.append(Ether(src=src_mac, dst=dst_mac) / IPv6(src="2001:db8::201", dst="2001:db8::200") / IPv6ExtHdrHopByHop()
              / UDP(sport=40000, dport=4789) / VXLAN(vni=99) / inner / ICMP(id=2, seq=2))
sendp(frames, iface="eth0", verbose=False)
'''


def test_live_snoop_shows_outer_fragments_and_ipv6_extension_headers(ov):
    """The capture filter lets through what the decoder shows: later IPv4 fragments of a VXLAN datagram
    and VXLAN behind an IPv6 hop-by-hop header (crafted by scapy from host2, to addresses nobody has,
    on a VNI no overlay uses, so only snoop sees them)."""
    pytest.importorskip("scapy.all")
    mac = ov.lab.exec(ov.lab.host_ns(ov.h1), "cat", "/sys/class/net/eth0/address").stdout.strip()
    proc = start_snoop(ov, "-i", "eth0", "--port", "4789", "-c", "4", "--json")
    try:
        ov.lab.exec(ov.lab.host_ns(ov.h2), sys.executable, "-c", _SEND_CRAFTED, mac, timeout=60)
        rc, out, err = finish(proc, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    objs = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and len(objs) == 4, (out, err)
    first, *later, v6 = objs
    assert (first["vni"], first["fragment"], first["info"]) == (
        99, "outer IPv4 fragment id 0x4242 offset 0, more follow", "echo request id 1 seq 1")
    assert [o["fragment"] for o in later] == ["outer IPv4 fragment id 0x4242 offset 1000, more follow",
                                              "outer IPv4 fragment id 0x4242 offset 2000, last"]
    assert (v6["outer_src"], v6["vni"], v6["info"], v6["malformed"]) == ("2001:db8::201", 99, "echo request id 2 seq 2",
                                                                         None)
