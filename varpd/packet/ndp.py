"""Proxy NDP: recognise Neighbor Solicitations and forge Advertisements (RFC 4861, illumos varpd_ndp).

dpkt decodes IPv6 and the ICMPv6 type/code/checksum header but has no NS/NA body
or option classes, so those are hand-built here.

Contract: None means "not a solicitation we should answer" (other traffic, DAD,
extension headers, wrong hop limit, multicast target...); PacketError means the
bytes are corrupt (truncation, bad ICMPv6 checksum, bad option length).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import dpkt

from varpd.packet.checksum import internet_checksum, ipv6_pseudo_header
from varpd.packet.errors import PacketError
from varpd.packet.ethernet import ETHERTYPE_IPV6, build_ethernet, decoding, parse_ethernet
from varpd.packet.ipv6 import NEXT_HEADER_ICMPV6, build_ipv6, parse_ipv6
from varpd.packet.mac import bytes_to_mac, is_multicast_mac, mac_to_bytes

ICMPV6_NEIGHBOR_SOLICITATION = 135
ICMPV6_NEIGHBOR_ADVERTISEMENT = 136
ND_OPT_SOURCE_LLADDR = 1
ND_OPT_TARGET_LLADDR = 2
NA_FLAG_ROUTER = 0x80000000
NA_FLAG_SOLICITED = 0x40000000
NA_FLAG_OVERRIDE = 0x20000000
NDP_HOP_LIMIT = 255

ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = "33:33:00:00:00:01"
_SOLICITED_NODE_PREFIX = ipaddress.IPv6Network("ff02::1:ff00:0/104")
_UNSPECIFIED = ipaddress.IPv6Address("::")
_ICMPV6_HEADER_LEN = 4
_ND_BODY_LEN = 20  # reserved/flags (4) + target (16)


@dataclass(frozen=True, slots=True)
class NeighborSolicitation:
    """A solicitation for target; src_mac/src_ip are where the advertisement goes."""

    src_mac: str
    src_ip: ipaddress.IPv6Address
    dst_ip: ipaddress.IPv6Address
    target: ipaddress.IPv6Address
    source_lladdr: str | None = None
    vlan: int | None = None


def multicast_mac_for(ip: ipaddress.IPv6Address) -> bytes:
    """RFC 2464 §7: 33:33 followed by the low 32 bits of the group address."""
    return b"\x33\x33" + ip.packed[-4:]


def solicited_node_address(ip: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(_SOLICITED_NODE_PREFIX.network_address.packed[:13] + ip.packed[-3:])


def _parse_options(raw: bytes) -> list[tuple[int, bytes]]:
    """RFC 4861 §4.6 TLVs (length in 8-octet units); a zero length is corrupt."""
    options: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(raw):
        if len(raw) - offset < 2:
            raise PacketError("truncated NDP option header")
        kind, units = raw[offset], raw[offset + 1]
        size = units * 8
        if size == 0:
            raise PacketError("NDP option with zero length")
        if offset + size > len(raw):
            raise PacketError(f"truncated NDP option {kind}: needs {size} bytes")
        options.append((kind, raw[offset + 2:offset + size]))
        offset += size
    return options


def _destination_ok(eth_dst: str, ip_dst: ipaddress.IPv6Address,
                    target: ipaddress.IPv6Address) -> bool:
    """Multicast NS must go to ff02::1 or target's solicited-node group on the matching 33:33 MAC;
    unicast NS (neighbour unreachability detection) must use a unicast MAC."""
    if ip_dst.is_multicast:
        if ip_dst != ALL_NODES and ip_dst != solicited_node_address(target):
            return False
        return mac_to_bytes(eth_dst) == multicast_mac_for(ip_dst)
    return not is_multicast_mac(eth_dst)


def parse_neighbor_solicitation(frame: bytes) -> NeighborSolicitation | None:
    eth = parse_ethernet(frame)
    if eth is None or eth.ethertype != ETHERTYPE_IPV6:
        return None
    ip6 = parse_ipv6(eth.payload)
    if ip6.next_header != NEXT_HEADER_ICMPV6:
        return None  # includes any extension header, as illumos does
    icmp = ip6.payload
    if len(icmp) < _ICMPV6_HEADER_LEN:
        raise PacketError(f"truncated ICMPv6 header: {len(icmp)} bytes")
    with decoding("ICMPv6"):
        msg = dpkt.icmp6.ICMP6(icmp)
    if msg.type != ICMPV6_NEIGHBOR_SOLICITATION:
        return None
    pseudo = ipv6_pseudo_header(ip6.src, ip6.dst, NEXT_HEADER_ICMPV6, len(icmp))
    if internet_checksum(pseudo + icmp) != 0:
        raise PacketError("bad ICMPv6 checksum on neighbor solicitation")
    if len(icmp) < _ICMPV6_HEADER_LEN + _ND_BODY_LEN:
        raise PacketError(f"truncated neighbor solicitation: {len(icmp)} bytes")
    target = ipaddress.IPv6Address(icmp[8:24])
    options = _parse_options(icmp[24:])
    if msg.code != 0 or ip6.hop_limit != NDP_HOP_LIMIT or target.is_multicast:
        return None  # RFC 4861 §7.1.1: silently discard
    if ip6.src == _UNSPECIFIED:
        return None  # duplicate address detection: answering would break the prober
    if not _destination_ok(eth.dst_mac, ip6.dst, target):
        return None
    lladdr = None
    for kind, value in options:
        if kind == ND_OPT_SOURCE_LLADDR:
            if len(value) != 6:
                raise PacketError(f"source link-layer option of {len(value)} bytes")
            lladdr = bytes_to_mac(value)
            break
    return NeighborSolicitation(src_mac=eth.src_mac, src_ip=ip6.src, dst_ip=ip6.dst,
                                target=target, source_lladdr=lladdr, vlan=eth.vlan)


def _advertisement(src_mac: str, dst_mac: str, src_ip: ipaddress.IPv6Address,
                   dst_ip: ipaddress.IPv6Address, target: ipaddress.IPv6Address,
                   flags: int, vlan: int | None) -> bytes:
    body = struct.pack(">I16sBB6s", flags, target.packed, ND_OPT_TARGET_LLADDR, 1,
                       mac_to_bytes(src_mac))
    msg = dpkt.icmp6.ICMP6(type=ICMPV6_NEIGHBOR_ADVERTISEMENT, code=0, sum=0, data=body)
    pseudo = ipv6_pseudo_header(src_ip, dst_ip, NEXT_HEADER_ICMPV6, len(msg))
    msg.sum = internet_checksum(pseudo + bytes(msg))
    packet = build_ipv6(src_ip, dst_ip, NEXT_HEADER_ICMPV6, bytes(msg), NDP_HOP_LIMIT)
    return build_ethernet(dst_mac, src_mac, ETHERTYPE_IPV6, packet, vlan)


def _ipv6(ip: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(ip)
    except ValueError as exc:
        raise PacketError(str(exc)) from exc


def build_neighbor_advertisement(ns: NeighborSolicitation, answer_mac: str) -> bytes:
    """Solicited+Override NA for ns.target at answer_mac, sent back to the solicitor.

    The Router flag stays clear: the proxy answers for hosts, never routers.
    """
    return _advertisement(answer_mac, ns.src_mac, _ipv6(ns.target), _ipv6(ns.src_ip),
                          _ipv6(ns.target), NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE, ns.vlan)


def build_unsolicited_na(mac: str, ip: ipaddress.IPv6Address, *, vlan: int | None = None) -> bytes:
    """Override-only NA to all-nodes, so neighbours update a moved/changed mapping (RFC 4861 §7.2.6)."""
    ip = _ipv6(ip)
    return _advertisement(mac, ALL_NODES_MAC, ip, ALL_NODES, ip, NA_FLAG_OVERRIDE, vlan)
