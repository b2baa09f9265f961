"""varpd.packet.vxlan_summary and `varpd snoop -r/-w`: hand-built underlay frames in, one line out.

Frames are built with struct (packet_helpers), never with the code under test.
"""
from __future__ import annotations

import json
import random
import struct

import dpkt
import pytest

from packet_helpers import (bootp, checksum, ether, icmp6_pseudo, ip4, ip6, ipv4_udp, mac, ns_frame,
                            udhcpc_discover)
from varpd.cli.main import main
from varpd.packet.vxlan_summary import VxlanSummary, format_summary, format_time, summarize, summary_to_dict

G1, G2 = "de:ad:be:ef:00:00", "de:ad:be:ef:00:01"
UNDERLAY = "02:00:00:00:00:01", "02:00:00:00:00:02"
OUTER = "192.0.2.1:51234 > 192.0.2.2:4789"


# -- builders ---------------------------------------------------------------------------------------

def ipv4(src: str, dst: str, proto: int, payload: bytes, *, frag: int = 0, total: int | None = None) -> bytes:
    total = 20 + len(payload) if total is None else total
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, frag, 64, proto, 0, ip4(src), ip4(dst))
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def ipv6(src: str, dst: str, nxt: int, payload: bytes, *, plen: int | None = None) -> bytes:
    plen = len(payload) if plen is None else plen
    return struct.pack("!IHBB16s16s", 0x60000000, plen, nxt, 64, ip6(src), ip6(dst)) + payload


def icmp_echo(kind: int, ident: int, seq: int) -> bytes:
    body = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + b"0123456789abcdef"
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def icmp6(src: str, dst: str, body: bytes) -> bytes:
    csum = checksum(icmp6_pseudo(ip6(src), ip6(dst), len(body)) + body)
    return ipv6(src, dst, 58, body[:2] + struct.pack("!H", csum) + body[4:])


def arp(op: int, sha: str, spa: str, tha: str, tpa: str) -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac(sha), ip4(spa), mac(tha), ip4(tpa))


def tcp(sport: int, dport: int, flags: int, seq: int = 1000, ack: int = 0, data: bytes = b"") -> bytes:
    return struct.pack("!HHIIHHHH", sport, dport, seq, ack, (5 << 12) | flags, 65535, 0, 0) + data


def vxlan(inner: bytes, vni: int = 23, *, flags: int = 0x08, src: str = "192.0.2.1", dst: str = "192.0.2.2",
          sport: int = 51234, dport: int = 4789, v6: bool = False) -> bytes:
    """inner Ethernet frame → underlay Ethernet/IP/UDP/VXLAN frame."""
    payload = struct.pack("!B3xI", flags, vni << 8) + inner
    if v6:
        udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        return ether(UNDERLAY[1], UNDERLAY[0], 0x86DD, ipv6(src, dst, 17, udp))
    return ether(UNDERLAY[1], UNDERLAY[0], 0x0800, ipv4_udp(src, dst, sport, dport, payload))


def ping4(kind: int = 8, **kw) -> bytes:
    return vxlan(ether(G2, G1, 0x0800, ipv4("10.55.55.2", "10.55.55.3", 1, icmp_echo(kind, 7, 1))), **kw)


def line(frame: bytes, **kw) -> str:
    """The summary line without its time of day (which depends on the local time zone)."""
    s = summarize(frame, **kw)
    assert s is not None
    return format_summary(s).split(" ", 1)[1]


# -- each inner kind --------------------------------------------------------------------------------

def test_icmp_echo_request_is_the_documented_line():
    s = summarize(ping4(), timestamp=1700000000.123456)
    assert s == VxlanSummary(1700000000.123456, "192.0.2.1", 51234, "192.0.2.2", 4789, 23, G1, G2, None,
                             "IPv4", "10.55.55.2", "10.55.55.3", "ICMP", "echo request id 7 seq 1", None)
    assert format_summary(s) == (f"{format_time(s.timestamp)} {OUTER} vni 23 {G1} > {G2} IPv4 "
                                 "10.55.55.2 > 10.55.55.3 ICMP echo request id 7 seq 1")
    assert format_time(s.timestamp).endswith(".123456")


def test_icmp_echo_reply_and_other_icmp():
    assert line(ping4(0)).endswith("ICMP echo reply id 7 seq 1")
    unreach = struct.pack("!BBHI", 3, 3, 0, 0) + ipv4("10.55.55.3", "10.55.55.2", 17, b"\0" * 8)
    frame = vxlan(ether(G1, G2, 0x0800, ipv4("10.55.55.3", "10.55.55.2", 1, unreach)))
    assert line(frame).endswith("ICMP unreachable code 3")


def test_arp_who_has_and_is_at():
    req = vxlan(ether("ff:ff:ff:ff:ff:ff", G1, 0x0806, arp(1, G1, "10.55.55.2", "00:00:00:00:00:00",
                                                            "10.55.55.3")).ljust(60, b"\0"))
    assert line(req) == f"{OUTER} vni 23 {G1} > ff:ff:ff:ff:ff:ff ARP who-has 10.55.55.3 tell 10.55.55.2"
    rep = vxlan(ether(G1, G2, 0x0806, arp(2, G2, "10.55.55.3", G1, "10.55.55.2")))
    assert line(rep) == f"{OUTER} vni 23 {G2} > {G1} ARP 10.55.55.3 is-at {G2}"


def test_ipv6_neighbor_solicitation_and_advertisement():
    ns = vxlan(ns_frame(G1, "fe80::3", "fe80::4"))
    assert line(ns).endswith(f"IPv6 fe80::3 > ff02::1:ff00:4 ICMPv6 neighbor solicitation who-has fe80::4 from {G1}")
    na_body = struct.pack("!BBHI16s", 136, 0, 0, 0x60000000, ip6("fe80::4")) + struct.pack("!BB6s", 2, 1, mac(G2))
    na = vxlan(ether(G1, G2, 0x86DD, icmp6("fe80::4", "fe80::3", na_body)))
    s = summarize(na)
    assert (s.network, s.src_ip, s.dst_ip, s.protocol) == ("IPv6", "fe80::4", "fe80::3", "ICMPv6")
    assert s.info == f"neighbor advertisement fe80::4 is-at {G2}" and s.malformed is None


def test_icmpv6_echo():
    body = struct.pack("!BBHHH", 128, 0, 0, 9, 4) + b"ping"
    frame = vxlan(ether(G2, G1, 0x86DD, icmp6("fe80::3", "fe80::4", body)))
    assert line(frame).endswith("IPv6 fe80::3 > fe80::4 ICMPv6 echo request id 9 seq 4")


def test_dhcp_discover_and_offer():
    s = summarize(vxlan(udhcpc_discover(G1, xid=0x3903F326)))
    assert (s.protocol, s.info) == ("DHCP", f"DISCOVER xid 0x3903f326 chaddr {G1}")
    offer = bootp(2, 0x3903F326, G1, bytes((53, 1, 2, 54, 4)) + ip4("10.55.55.1") + b"\xff",
                  yiaddr="10.55.55.2").ljust(300, b"\0")
    frame = vxlan(ether(G1, G2, 0x0800, ipv4_udp("10.55.55.1", "10.55.55.2", 67, 68, offer)))
    assert line(frame).endswith(f"10.55.55.1 > 10.55.55.2 DHCP OFFER xid 0x3903f326 chaddr {G1} yiaddr 10.55.55.2")


def test_tcp_and_udp_ports():
    syn = vxlan(ether(G2, G1, 0x0800, ipv4("10.55.55.2", "10.55.55.3", 6, tcp(40000, 5201, 0x02))))
    assert line(syn).endswith("TCP 40000 > 5201 [S] seq 1000 len 0")
    data = vxlan(ether(G2, G1, 0x0800, ipv4("10.55.55.2", "10.55.55.3", 6,
                                            tcp(40000, 5201, 0x18, 5, 77, b"hello"))))
    assert line(data).endswith("TCP 40000 > 5201 [P.] seq 5 ack 77 len 5")
    udp = vxlan(ether(G2, G1, 0x0800, ipv4_udp("10.55.55.2", "10.55.55.3", 5353, 53, b"query")))
    assert line(udp).endswith("UDP 5353 > 53 len 5")


def test_vlan_tag_and_other_ethertypes():
    tagged = vxlan(ether(G2, G1, 0x0800, ipv4("10.55.55.2", "10.55.55.3", 1, icmp_echo(8, 1, 2)), vlan=42))
    assert f"{G1} > {G2} vlan 42 IPv4 10.55.55.2 > 10.55.55.3 ICMP echo request id 1 seq 2" in line(tagged)
    lldp = vxlan(ether("01:80:c2:00:00:0e", G1, 0x88CC, b"\0" * 46))
    assert line(lldp).endswith("ethertype 0x88cc")
    llc = vxlan(mac(G2) + mac(G1) + struct.pack("!H", 46) + b"\0" * 46)
    assert line(llc).endswith("802.3 length 46")


def test_ipv6_underlay_and_source_port_match():
    s = summarize(ping4(src="2001:db8::1", dst="2001:db8::2", v6=True))
    assert (s.outer_src, s.outer_dst, s.vni, s.info) == ("2001:db8::1", "2001:db8::2", 23, "echo request id 7 seq 1")
    assert line(ping4(src="2001:db8::1", dst="2001:db8::2", v6=True)).startswith(
        "[2001:db8::1]:51234 > [2001:db8::2]:4789 vni 23")
    # a reply from the VTEP's listening port to an ephemeral port is VXLAN too
    assert summarize(ping4(sport=4789, dport=40000)).vni == 23


def test_other_port_and_non_udp_are_not_ours():
    assert summarize(ping4(dport=8472)) is None
    assert summarize(ping4(dport=8472), port=8472).vni == 23
    assert summarize(ether("ff:ff:ff:ff:ff:ff", UNDERLAY[0], 0x0806,
                           arp(1, UNDERLAY[0], "192.0.2.1", "00:00:00:00:00:00", "192.0.2.2"))) is None
    assert summarize(ether(UNDERLAY[1], UNDERLAY[0], 0x0800, ipv4("192.0.2.1", "192.0.2.2", 6,
                                                                  tcp(4789, 4789, 2)))) is None


# -- malformed, truncated, oversized -----------------------------------------------------------------

def test_every_truncation_is_one_line_never_an_exception():
    frame = ping4()
    for n in range(len(frame)):
        s = summarize(frame[:n])
        assert s is not None and s.malformed, (n, s)
        assert "\n" not in format_summary(s)
    assert summarize(b"").malformed == "frame of 0 bytes is shorter than an Ethernet header"
    # cut inside the outer IPv4 packet: the addresses are still shown
    s = summarize(frame[:40])
    assert s.outer_src == "192.0.2.1" and "truncated" in s.malformed


def test_a_snap_length_cut_decodes_as_far_as_the_bytes_go():
    """tcpdump -s 96: the record keeps 96 bytes of a longer frame; that is truncation, not damage."""
    frame = ping4()
    s = summarize(frame[:96], wire_len=len(frame))
    assert (s.outer_src, s.outer_dport, s.vni, s.src_mac, s.protocol, s.info, s.malformed) == (
        "192.0.2.1", 4789, 23, G1, "ICMP", "echo request id 7 seq 1", None)
    assert s.truncated == f"captured 96 of {len(frame)} bytes"
    assert line(frame[:96], wire_len=len(frame)).endswith(f"seq 1 [truncated: captured 96 of {len(frame)} bytes]")
    for n in range(len(frame)):  # any snap length: never malformed, always says what was cut
        s = summarize(frame[:n], wire_len=len(frame))
        assert s is not None and s.malformed is None and s.truncated.startswith(f"captured {n} of "), (n, s)
    s = summarize(frame[:80], wire_len=len(frame))
    assert s.src_mac == G1 and s.network == "IPv4" and s.truncated.endswith("IPv4 header cut after 16 of 20 bytes")


def test_random_garbage_never_raises():
    rng = random.Random(5)
    head = ping4()[:14 + 20 + 8 + 8]  # up to and including the VXLAN header
    for _ in range(2000):
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        for frame in (junk, head + junk):
            try:
                s = summarize(frame)
            except Exception as exc:  # pragma: no cover - the failure message is the point
                pytest.fail(f"summarize raised {exc!r} on {frame.hex()}")
            if s is not None:
                format_summary(s)
                json.dumps(summary_to_dict(s))


def test_bad_vxlan_header_and_runt_inner_frame():
    s = summarize(ping4(flags=0x00))
    assert (s.outer_dst, s.vni, s.malformed) == ("192.0.2.2", None, "VXLAN flags 0x00 without the I (VNI valid) flag")
    s = summarize(vxlan(b"\x01\x02\x03"))
    assert (s.vni, s.src_mac, s.malformed) == (23, None, "inner frame of 3 bytes is shorter than an Ethernet header")
    s = summarize(ether(UNDERLAY[1], UNDERLAY[0], 0x0800, ipv4_udp("192.0.2.1", "192.0.2.2", 5, 4789, b"\x08" * 5)))
    assert s.malformed == "truncated VXLAN header: 5 of 8 bytes"


@pytest.mark.parametrize("frame, why", [
    (vxlan(ether(G2, G1, 0x0800, ipv4("10.55.55.2", "10.55.55.3", 1, icmp_echo(8, 7, 1), total=200))),
     "IPv4 total length 200 invalid for 44 bytes (truncated?)"),
    (vxlan(ether(G2, G1, 0x0800, b"\x65" + bytes(19))), "IPv4 header has IP version 6"),
    (vxlan(ether(G2, G1, 0x86DD, ipv6("fe80::3", "fe80::4", 58, b"\x80\0\0\0", plen=64))),
     "IPv6 payload length 64 invalid for 4 bytes (truncated?)"),
    (vxlan(ether(G2, G1, 0x0800, ipv4("10.55.55.2", "10.55.55.3", 1, b"\x08\0\0\0"))), "truncated ICMP echo"),
    (vxlan(ether(G2, G1, 0x0800, ipv4("10.55.55.2", "10.55.55.3", 6, b"\0" * 10))), "truncated TCP header"),
    (vxlan(ether(G2, G1, 0x0800, ipv4("10.55.55.2", "10.55.55.3", 17, struct.pack("!HHHH", 1, 2, 99, 0)))),
     "UDP length 99 invalid for 8 bytes"),
    (vxlan(ether("ff:ff:ff:ff:ff:ff", G1, 0x0800,
                 ipv4_udp("0.0.0.0", "255.255.255.255", 68, 67, bootp(1, 1, G1, b"\x35\x05\x01")))),
     "truncated DHCP option 53"),
], ids=["ipv4-total-length", "ip-version", "ipv6-payload-length", "icmp-echo", "tcp-header", "udp-length",
        "dhcp-option"])
def test_malformed_inner_frames_keep_what_decoded(frame, why):
    s = summarize(frame)
    assert s.vni == 23 and s.src_mac == G1 and s.malformed.startswith(why), s
    assert format_summary(s).endswith(f"malformed: {s.malformed}")


def test_outer_udp_length_beyond_the_packet_is_malformed():
    frame = bytearray(ping4())
    struct.pack_into("!H", frame, 14 + 20 + 4, 3000)
    s = summarize(bytes(frame))
    assert (s.outer_src, s.outer_dport, s.vni) == ("192.0.2.1", 4789, None)
    assert s.malformed.startswith("outer UDP length 3000 invalid")


def test_oversized_frames_are_flagged_but_still_decoded():
    s = summarize(ping4() + bytes(70000))
    assert s.info == "echo request id 7 seq 1"
    assert s.malformed == "oversized: 70000 bytes beyond the outer IPv4 total length"
    inner = ether(G2, G1, 0x0800, ipv4("10.55.55.2", "10.55.55.3", 1, icmp_echo(8, 7, 1)) + bytes(1400))
    s = summarize(vxlan(inner))
    assert s.info == "echo request id 7 seq 1" and s.malformed == "oversized: 1400 bytes beyond the IPv4 total length"
    # Ethernet padding of a minimum-size frame is not oversized
    arp_req = ether("ff:ff:ff:ff:ff:ff", G1, 0x0806, arp(1, G1, "10.55.55.2", "00:00:00:00:00:00", "10.55.55.3"))
    assert summarize(vxlan(arp_req.ljust(60, b"\0"))).malformed is None
    small = ether(G2, G1, 0x0800, ipv4("10.55.55.2", "10.55.55.3", 1, b"\x08\0\0\0\0\1\0\1")).ljust(60, b"\0")
    assert summarize(vxlan(small)).malformed is None


def test_json_form_has_every_field_and_the_line():
    d = summary_to_dict(summarize(ping4(), timestamp=1.5))
    assert json.loads(json.dumps(d)) == d
    assert d["vni"] == 23 and d["outer_dst"] == "192.0.2.2" and d["malformed"] is None and d["vlan"] is None
    assert d["text"].endswith("ICMP echo request id 7 seq 1")


# -- the command on pcap files (-r, -w, --vni, -c, --json) -----------------------------------------

def _write_pcap(path, frames) -> None:
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f)
        for i, frame in enumerate(frames):
            w.writepkt(frame, ts=1000.0 + i)


def test_snoop_reads_pcap_filters_by_vni_and_writes_pcap(tmp_path, capsys):
    frames = [ping4(), ping4(vni=99), ping4(0), ping4(dport=53), ping4()[:50]]
    src, out = tmp_path / "in.pcap", tmp_path / "out.pcap"
    _write_pcap(src, frames)

    assert main(["snoop", "-r", str(src)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4  # the UDP/53 frame is not VXLAN
    assert "vni 99" in lines[1] and "echo reply" in lines[2] and "malformed: outer IPv4 total length" in lines[3]

    assert main(["snoop", "-r", str(src), "--vni", "23", "-w", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(" vni 23 " in x for x in lines), lines
    with open(out, "rb") as f:
        assert [bytes(buf) for _, buf in dpkt.pcap.Reader(f)] == [frames[0], frames[2]]

    assert main(["snoop", "-r", str(src), "--vni", "99", "--json"]) == 0
    (obj,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert obj["vni"] == 99 and obj["timestamp"] == 1001.0 and obj["info"] == "echo request id 7 seq 1"

    assert main(["snoop", "-r", str(src), "-c", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert main(["snoop", "-r", str(src), "--vni", "5"]) == 0
    assert capsys.readouterr().out == ""


def test_snoop_reads_linux_cooked_pcap(tmp_path, capsys):
    frame = ping4()
    sll = struct.pack("!HHH8sH", 4, 1, 6, mac(UNDERLAY[0]) + b"\0\0", 0x0800) + frame[14:]
    path = tmp_path / "any.pcap"
    with open(path, "wb") as f:
        dpkt.pcap.Writer(f, linktype=dpkt.pcap.DLT_LINUX_SLL).writepkt(sll, ts=1.0)
    assert main(["snoop", "-r", str(path)]) == 0
    assert "vni 23" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["-r", "/nonexistent/x.pcap"], "-r /nonexistent/x.pcap: No such file or directory"),
    (["-r", "{junk}"], "not a pcap or pcapng file"),
    (["-r", "{junk}", "-i", "eth0"], "give -r FILE or -i IFACE, not both"),
])
def test_snoop_bad_input_is_one_line(tmp_path, capsys, argv, message):
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file at all")
    argv = [a.replace("{junk}", str(junk)) for a in argv]
    assert main(["snoop", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("varpd: snoop: ") and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("argv, message", [
    (["--vni", "16777216"], "argument --vni: 16777216 is not a VNI: a VNI is 1-16777215 (the VXLAN VNI range)"),
    (["--port", "0"], "argument --port: 0 is not in 1..65535"),
    (["-c", "0"], "argument -c/--count: 0 is not in 1..2147483647"),
    (["--vni", "x"], "argument --vni: 'x' is not a number: a VNI is 1-16777215 (the VXLAN VNI range)"),
])
def test_snoop_rejects_out_of_range_options(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["snoop", *argv])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(message)
