"""`varpd snoop -r` against tshark on scapy-crafted frames and hand-built pcapng files (issue #11).

Each case is a frame tshark decodes (fragments, stacked VLAN tags, IPv6 extension headers,
ICMPv6 type 0, QinQ and IPv6-extension underlays) or a damaged file; snoop runs in a
subprocess under a memory cap and must agree with tshark on every field tshark decodes,
and never print a traceback.
"""
from __future__ import annotations

import struct

import pytest

from _tshark import disagreements, run_capped, snoop_json, tshark_rows

scapy = pytest.importorskip("scapy.all", reason="scapy (test extras) crafts the hostile frames")
from scapy.all import (  # noqa: E402
    ICMP, IP, UDP, VXLAN, Dot1AD, Dot1Q, Ether, ICMPv6EchoRequest, ICMPv6Unknown, IPv6, IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, Raw, fragment, fragment6, wrpcap,
)

G1, G2 = "de:ad:be:ef:00:00", "de:ad:be:ef:00:01"
U1, U2 = "02:00:00:00:00:01", "02:00:00:00:00:02"


def underlay(inner, *, v6: bool = False, sport: int = 51234, dport: int = 4789):
    ip = IPv6(src="2001:db8::1", dst="2001:db8::2") if v6 else IP(src="192.0.2.1", dst="192.0.2.2")
    return Ether(src=U1, dst=U2) / ip / UDP(sport=sport, dport=dport) / VXLAN(vni=23) / inner


def guest4(payload, **ip):
    return Ether(src=G1, dst=G2) / IP(src="10.55.55.2", dst="10.55.55.3", **ip) / payload


def guest6(*layers):
    pkt = Ether(src=G1, dst=G2) / IPv6(src="2001:db8:55::2", dst="2001:db8:55::3")
    for layer in layers:
        pkt = pkt / layer
    return pkt


def cases() -> dict[str, list]:
    big = guest4(ICMP(id=7, seq=1) / Raw(b"x" * 2000))
    outer_frags = [Ether(src=U1, dst=U2) / f for f in
                   fragment(IP(src="192.0.2.1", dst="192.0.2.2", id=0x4242) / UDP(sport=51234, dport=4789)
                            / VXLAN(vni=23) / big, fragsize=1000)]
    inner_frags = [underlay(Ether(src=G1, dst=G2) / f) for f in
                   fragment(IP(src="10.55.55.2", dst="10.55.55.3", id=0x77) / UDP(sport=5000, dport=6000)
                            / Raw(b"y" * 3000), fragsize=1400)]
    dns_frags = [Ether(src=U1, dst=U2) / f for f in
                 fragment(IP(src="192.0.2.1", dst="192.0.2.9", id=9) / UDP(sport=53, dport=33333)
                          / Raw(b"z" * 3000), fragsize=1400)]
    outer6_frags = [Ether(src=U1, dst=U2) / f for f in
                    fragment6(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=5)
                              / UDP(sport=51234, dport=4789) / VXLAN(vni=23) / big, 1280)]
    inner6_frags = [underlay(Ether(src=G1, dst=G2) / f) for f in
                    fragment6(IPv6(src="2001:db8:55::2", dst="2001:db8:55::3") / IPv6ExtHdrFragment(id=6)
                              / UDP(sport=5000, dport=6000) / Raw(b"w" * 3000), 1400)]
    return {
        "outer-ipv4-fragments": outer_frags,
        "inner-ipv4-fragments": inner_frags,
        "other-udp-fragments": dns_frags,
        "outer-ipv6-fragments": outer6_frags,
        "inner-ipv6-fragments": inner6_frags,
        "three-vlan-tags": [underlay(Ether(src=G1, dst=G2) / Dot1AD(vlan=10) / Dot1Q(vlan=20) / Dot1Q(vlan=30)
                                    / IP(src="10.55.55.2", dst="10.55.55.3") / ICMP(id=3, seq=4))],
        "icmpv6-type-0": [underlay(guest6(ICMPv6Unknown(type=0, code=0, msgbody=b"\0\1\0\2")))],
        "outer-ipv6-extension-headers": [
            Ether(src=U1, dst=U2) / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop()
            / IPv6ExtHdrDestOpt() / UDP(sport=51234, dport=4789) / VXLAN(vni=23) / guest4(ICMP(id=1, seq=1))],
        "outer-qinq": [Ether(src=U1, dst=U2) / Dot1AD(vlan=100) / Dot1Q(vlan=200)
                       / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=51234, dport=4789) / VXLAN(vni=23)
                       / guest4(ICMP(id=2, seq=2))],
        "inner-ipv6-extension-headers": [underlay(guest6(IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(segleft=0),
                                                         IPv6ExtHdrDestOpt(), ICMPv6EchoRequest(id=9, seq=4)))],
        "outer-ipv6-underlay": [underlay(guest4(ICMP(id=5, seq=6)), v6=True)],
        # dpkt's IPv6 decoder raised AttributeError ('IP6RoutingHeader' object has no attribute 'frag_off')
        "inner-ipv6-fragment-then-routing": [underlay(guest6(IPv6ExtHdrFragment(id=8), IPv6ExtHdrRouting(segleft=0),
                                                             ICMPv6EchoRequest(id=1, seq=2)))],
    }


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """Every case in one pcap, decoded once by snoop and once by tshark: case -> snoop's objects."""
    path = tmp_path_factory.mktemp("crafted") / "crafted.pcap"
    frames, owner = [], {}
    for name, pkts in cases().items():
        for pkt in pkts:
            frames.append(pkt)
            owner[len(frames)] = name
    wrpcap(str(path), frames)
    objs, done = snoop_json(path)
    assert done.returncode == 0, done.stderr
    by_case: dict[str, list[dict]] = {name: [] for name in cases()}
    for o in objs:
        by_case[owner[o["frame"]]].append(o)
    return path, objs, by_case


def test_snoop_agrees_with_tshark_on_crafted_frames(crafted):
    path, objs, by_case = crafted
    assert disagreements(objs, tshark_rows(path)) == []
    assert all(o["malformed"] is None for o in objs), [o["text"] for o in objs]
    assert all(by_case[name] for name in by_case if name != "other-udp-fragments"), by_case


def test_fragments_are_shown_as_far_as_they_go(crafted):
    _, _, by_case = crafted
    first, *later = by_case["outer-ipv4-fragments"]
    assert (first["outer_dport"], first["vni"], first["src_mac"], first["protocol"]) == (4789, 23, G1, "ICMP")
    assert first["fragment"] == "outer IPv4 fragment id 0x4242 offset 0, more follow"
    assert later and all(o["fragment"].startswith("outer IPv4 fragment id 0x4242 offset ") for o in later)
    assert later[-1]["fragment"].endswith(", last")
    first, *later = by_case["inner-ipv4-fragments"]
    assert first["info"] == "IPv4 first fragment id 0x77 5000 > 6000 len 3000", first
    assert [o["info"] for o in later] == ["IPv4 fragment at offset 1400", "IPv4 fragment at offset 2800"]
    assert by_case["other-udp-fragments"] == []  # not VXLAN: not shown at all
    first, *_ = by_case["inner-ipv6-fragments"]
    assert first["extensions"] == ["fragment"] and first["info"].startswith("IPv6 first fragment id 0x6 5000 > 6000")


def test_vlan_stacks_extension_headers_and_icmpv6_type_0(crafted):
    _, _, by_case = crafted
    (o,) = by_case["three-vlan-tags"]
    assert (o["vlan"], o["vlans"], o["info"]) == (10, [10, 20, 30], "echo request id 3 seq 4")
    assert " vlan 10 vlan 20 vlan 30 IPv4 " in o["text"]
    (o,) = by_case["icmpv6-type-0"]
    assert (o["protocol"], o["info"]) == ("ICMPv6", "type 0 code 0")
    (o,) = by_case["inner-ipv6-extension-headers"]
    assert o["extensions"] == ["hop-by-hop", "routing", "destination options"]
    assert o["text"].endswith("hop-by-hop routing destination options ICMPv6 echo request id 9 seq 4")
    (o,) = by_case["inner-ipv6-fragment-then-routing"]
    assert (o["extensions"], o["info"], o["malformed"]) == (["fragment", "routing"], "echo request id 1 seq 2", None)
    (o,) = by_case["outer-qinq"]
    assert (o["outer_vlans"], o["vni"]) == ([100, 200], 23) and o["text"].split(" ", 1)[1].startswith(
        "vlan 100 vlan 200 192.0.2.1:51234 > 192.0.2.2:4789 vni 23")
    (o,) = by_case["outer-ipv6-extension-headers"]
    assert (o["outer_src"], o["vni"], o["info"]) == ("2001:db8::1", 23, "echo request id 1 seq 1")


# -- hand-built pcapng ---------------------------------------------------------------------------

def block(kind: int, body: bytes, *, length: int | None = None, trailer: int | None = None) -> bytes:
    body = body.ljust((len(body) + 3) // 4 * 4, b"\0")
    size = 12 + len(body)
    return struct.pack("<II", kind, size if length is None else length) + body + struct.pack(
        "<I", size if trailer is None else trailer)


SHB = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(linktype: int, snaplen: int = 0, tsresol: int | None = None) -> bytes:
    opts = b"" if tsresol is None else struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
    return block(1, struct.pack("<HHI", linktype, 0, snaplen) + opts)


def epb(iface: int, data: bytes, ticks: int = 1_700_000_000_000_000, wire_len: int | None = None) -> bytes:
    return block(6, struct.pack("<IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                                len(data) if wire_len is None else wire_len) + data)


def spb(data: bytes) -> bytes:
    return block(3, struct.pack("<I", len(data)) + data)


def frame() -> bytes:
    return bytes(underlay(guest4(ICMP(id=7, seq=1))))


def cooked2(eth: bytes) -> bytes:
    """A Linux cooked v2 (SLL2) record of an Ethernet frame, as tcpdump -i any writes it."""
    return eth[12:14] + b"\0\0" + struct.pack("!IHBB8s", 2, 1, 0, 6, eth[6:12] + b"\0\0") + eth[14:]


def test_pcapng_simple_packet_blocks_two_link_types_and_huge_timestamps(tmp_path):
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(SHB + idb(1) + idb(276, tsresol=9) + idb(147) + epb(0, frame()) + spb(frame())
                     + epb(1, cooked2(frame()), ticks=2**64 - 1) + epb(2, b"\x01\x02") + epb(0, frame()))
    objs, done = snoop_json(path)
    assert done.returncode == 0, done.stderr
    assert [o["frame"] for o in objs] == [1, 2, 3, 5]
    assert all(o["vni"] == 23 and o["info"] == "echo request id 7 seq 1" and o["malformed"] is None for o in objs)
    assert objs[2]["timestamp"] == pytest.approx((2**64 - 1) / 1e9)
    assert "interface 2 has link type 147: its packets are not decoded" in done.stderr
    assert disagreements(objs, tshark_rows(path)) == []
    text = run_capped(["snoop", "-r", str(path)])
    assert text.returncode == 0 and len(text.stdout.splitlines()) == 4, text.stderr
    # a timestamp no calendar holds is shown as seconds, not a ValueError
    path.write_bytes(SHB + idb(1) + epb(0, frame(), ticks=2**64 - 1))
    done = run_capped(["snoop", "-r", str(path)])
    assert done.returncode == 0 and done.stdout.startswith("18446744073709.55"), (done.stdout, done.stderr)


@pytest.mark.parametrize("data, message", [
    (SHB + block(1, struct.pack("<HHI", 1, 0, 0), length=13),
     "block (type 0x1) block at byte 28: length 13 is not a multiple of 4"),
    (SHB + block(1, struct.pack("<HHI", 1, 0, 0), length=8), "block (type 0x1) block at byte 28: length 8 is below 12"),
    (SHB + idb(1) + block(6, b"\0" * 8, length=0x7FFFFFF0), "length 2147483632 exceeds 16777216"),
    (SHB + block(1, struct.pack("<HHI", 1, 0, 0), trailer=99), "trailing length 99 differs from its length 20"),
    (SHB + idb(1) + block(6, struct.pack("<IIIII", 0, 0, 0, 4000, 4000)),
     "captured length 4000 exceeds the 0 bytes of the block"),
    (SHB + epb(0, frame()), "interface 0 was not described (0 interface blocks in this section)"),
    (block(0x0A0D0D0A, struct.pack("<IHHq", 0x11223344, 1, 0, -1)), "byte-order magic 44332211"),
    (SHB[:-4] + struct.pack("<I", 1), "trailing length 1 differs"),
], ids=["length-not-multiple-of-4", "length-below-12", "huge-length", "trailer-differs", "caplen-beyond-block",
        "undescribed-interface", "bad-byte-order", "shb-trailer"])
def test_bad_pcapng_blocks_are_one_clear_line(tmp_path, data, message):
    path = tmp_path / "bad.pcapng"
    path.write_bytes(data)
    done = run_capped(["snoop", "-r", str(path)])
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"varpd: snoop: -r {path}: ") and message in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_a_file_cut_mid_record_warns_and_says_so_at_the_end(tmp_path):
    path = tmp_path / "cut.pcap"
    wrpcap(str(path), [underlay(guest4(ICMP(id=7, seq=n))) for n in range(3)])
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    objs, done = snoop_json(path)
    assert [o["info"] for o in objs] == ["echo request id 7 seq 0", "echo request id 7 seq 1"]
    assert done.returncode == 1
    warning, end = done.stderr.splitlines()
    assert warning.startswith(f"varpd snoop: warning: -r {path}: the file ends inside record 3 at byte "), warning
    assert end == f"varpd snoop: 2 frames shown of 2 records; {path} is cut short mid-record: the rest of the file " \
                  "was not read", end
    path.write_bytes(data[:24 + 16 + len(frame()) + 5])  # cut inside the second record's header
    objs, done = snoop_json(path)
    assert len(objs) == 1 and "inside the header of record 2" in done.stderr and done.returncode == 1


def pcap_header(linktype: int = 1) -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)


@pytest.mark.parametrize("data, message", [
    (pcap_header() + struct.pack("<IIII", 1, 0, 0x7FFFFFFF, 0x7FFFFFFF) + b"\0" * 64,
     "record 1 at byte 24: captured length 2147483647 exceeds 262144 (damaged file?)"),
    (pcap_header(147), "link type 147 is not Ethernet (1), Linux cooked (113), Linux cooked v2 (276) or raw IP (101, 228, 229)"),
    (struct.pack("<IHHiIII", 0xA1B2C3D4, 3, 0, 0, 0, 65535, 1), "pcap version 3.0 is not 2.x"),
], ids=["huge-caplen", "link-type", "version"])
def test_bad_pcap_is_one_clear_line(tmp_path, data, message):
    path = tmp_path / "bad.pcap"
    path.write_bytes(data)
    done = run_capped(["snoop", "-r", str(path)])
    assert done.returncode == 1 and done.stderr == f"varpd: snoop: -r {path}: {message}\n", done.stderr


def test_a_snap_length_capture_written_again_keeps_its_wire_lengths(tmp_path):
    """-r of a `tcpdump -s 96` file and -w: the records keep 96 bytes and say how long the frames were."""
    full = [underlay(guest4(ICMP(id=7, seq=n) / Raw(b"p" * 100))) for n in range(2)]
    snap, out = tmp_path / "snap.pcap", tmp_path / "out.pcap"
    snap.write_bytes(pcap_header() + b"".join(struct.pack("<IIII", 1, n, 96, len(bytes(f))) + bytes(f)[:96]
                                             for n, f in enumerate(full)))
    objs, done = snoop_json(snap, "-w", str(out))
    assert done.returncode == 0 and [o["info"] for o in objs] == ["echo request id 7 seq 0", "echo request id 7 seq 1"]
    assert all(o["truncated"] == f"captured 96 of {len(bytes(full[0]))} bytes" and o["malformed"] is None
               for o in objs), objs
    again, _ = snoop_json(out)
    assert [o["text"] for o in again] == [o["text"] for o in objs]
    rows = tshark_rows(out)
    assert disagreements(again, rows) == []
