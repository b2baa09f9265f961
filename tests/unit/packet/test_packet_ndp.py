"""NDP proxy tests. A bad ICMPv6 checksum is corrupt input, so it raises PacketError."""

import ipaddress
import struct

import pytest

from packet_helpers import ether, icmp6_pseudo, mac, ns_frame, ones_sum
from varpd.packet import (NeighborSolicitation, PacketError, build_neighbor_advertisement,
                          build_unsolicited_na, parse_neighbor_solicitation)

SOLICITOR = "52:54:00:aa:bb:cc"
ANSWER = "02:08:20:11:22:33"
SRC = "fd00::5"
TARGET = "fd00::9"
A = ipaddress.IPv6Address


def test_parse_multicast_ns() -> None:
    ns = parse_neighbor_solicitation(ns_frame(SOLICITOR, SRC, TARGET))
    assert ns == NeighborSolicitation(src_mac=SOLICITOR, src_ip=A(SRC), dst_ip=A("ff02::1:ff00:9"),
                                      target=A(TARGET), source_lladdr=SOLICITOR, vlan=None)


def test_parse_unicast_nud_and_all_nodes() -> None:
    ns = parse_neighbor_solicitation(ns_frame(SOLICITOR, SRC, TARGET, dst_ip=TARGET,
                                              dst_mac=ANSWER, sllao=False))
    assert ns is not None and ns.dst_ip == A(TARGET) and ns.source_lladdr is None
    ns = parse_neighbor_solicitation(ns_frame(SOLICITOR, SRC, TARGET, dst_ip="ff02::1", vlan=7))
    assert ns is not None and ns.vlan == 7


def test_bad_checksum_raises() -> None:
    with pytest.raises(PacketError, match="checksum"):
        parse_neighbor_solicitation(ns_frame(SOLICITOR, SRC, TARGET, corrupt_checksum=True))


@pytest.mark.parametrize("kwargs", [
    {"src_ip": "::"},                                   # DAD
    {"hop_limit": 254},
    {"target": "ff02::1"},                              # multicast target
    {"dst_ip": "ff02::1:ff00:1234"},                    # wrong solicited-node group
    {"dst_mac": "33:33:ff:00:00:10"},                   # MAC does not match the group
    {"dst_ip": TARGET, "dst_mac": "33:33:ff:00:00:09"},  # unicast IP on multicast MAC
])
def test_not_answerable(kwargs: dict) -> None:
    args = {"src_mac": SOLICITOR, "src_ip": SRC, "target": TARGET} | kwargs
    assert parse_neighbor_solicitation(ns_frame(**args)) is None


def test_extension_header_is_ignored() -> None:
    frame = ns_frame(SOLICITOR, SRC, TARGET)
    ipv6 = bytearray(frame[14:])
    hbh = bytes((58, 0, 5, 2, 0, 0, 1, 0))  # hop-by-hop with router alert, then ICMPv6
    ipv6[6] = 0
    ipv6[4:6] = struct.pack("!H", len(ipv6) - 40 + 8)
    assert parse_neighbor_solicitation(frame[:14] + bytes(ipv6[:40]) + hbh + bytes(ipv6[40:])) is None


def test_other_icmpv6_is_ignored() -> None:
    echo = struct.pack("!BBHI", 128, 0, 0, 0)
    ipv6 = struct.pack("!IHBB16s16s", 0x60000000, len(echo), 58, 64, A(SRC).packed, A(TARGET).packed)
    assert parse_neighbor_solicitation(ether(ANSWER, SOLICITOR, 0x86DD, ipv6 + echo)) is None


def test_truncated_prefixes_never_parse() -> None:
    frame = ns_frame(SOLICITOR, SRC, TARGET)
    for n in range(len(frame)):
        with pytest.raises(PacketError):
            parse_neighbor_solicitation(frame[:n])


def test_zero_length_option_is_corrupt() -> None:
    frame = bytearray(ns_frame(SOLICITOR, SRC, TARGET))
    frame[-7] = 0  # option length byte
    with pytest.raises(PacketError):
        parse_neighbor_solicitation(bytes(frame))  # checksum or option length: both corrupt


def _check_na(frame: bytes, *, eth_dst: str, eth_src: str, ip_src: str, ip_dst: str,
              flags: int) -> None:
    dst, src, etype = struct.unpack("!6s6sH", frame[:14])
    assert (dst, src, etype) == (mac(eth_dst), mac(eth_src), 0x86DD)
    vtc, plen, nxt, hlim, s, d = struct.unpack("!IHBB16s16s", frame[14:54])
    icmp = frame[54:]
    assert vtc >> 28 == 6 and plen == len(icmp) == 32 and nxt == 58 and hlim == 255
    assert (s, d) == (A(ip_src).packed, A(ip_dst).packed)
    assert ones_sum(icmp6_pseudo(s, d, len(icmp)) + icmp) == 0xFFFF
    typ, code, _sum, got_flags, target, opt, olen, lladdr = struct.unpack("!BBHI16sBB6s", icmp)
    assert (typ, code, got_flags) == (136, 0, flags)
    assert target == A(ip_src).packed
    assert (opt, olen, lladdr) == (2, 1, mac(eth_src))


def test_advertisement() -> None:
    ns = parse_neighbor_solicitation(ns_frame(SOLICITOR, SRC, TARGET))
    na = build_neighbor_advertisement(ns, ANSWER)
    _check_na(na, eth_dst=SOLICITOR, eth_src=ANSWER, ip_src=TARGET, ip_dst=SRC, flags=0x60000000)


def test_advertisement_keeps_vlan() -> None:
    ns = parse_neighbor_solicitation(ns_frame(SOLICITOR, SRC, TARGET, vlan=300))
    na = build_neighbor_advertisement(ns, ANSWER)
    assert struct.unpack("!HHH", na[12:18]) == (0x8100, 300, 0x86DD)
    _check_na(na[:12] + na[16:], eth_dst=SOLICITOR, eth_src=ANSWER, ip_src=TARGET, ip_dst=SRC,
              flags=0x60000000)


def test_unsolicited() -> None:
    na = build_unsolicited_na(ANSWER, A(TARGET))
    _check_na(na, eth_dst="33:33:00:00:00:01", eth_src=ANSWER, ip_src=TARGET, ip_dst="ff02::1",
              flags=0x20000000)
