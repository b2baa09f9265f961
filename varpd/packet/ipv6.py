"""Minimal IPv6 framing for the NDP proxy: one header, no extension headers."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dpkt

from varpd.packet.errors import PacketError
from varpd.packet.ethernet import decoding

IPV6_HEADER_LEN = 40
NEXT_HEADER_ICMPV6 = 58


@dataclass(frozen=True, slots=True)
class Ipv6Header:
    src: ipaddress.IPv6Address
    dst: ipaddress.IPv6Address
    next_header: int
    hop_limit: int
    payload: bytes  # exactly payload-length bytes (link padding stripped)


def parse_ipv6(packet: bytes) -> Ipv6Header:
    """Fixed header only; callers reject extension headers by looking at next_header."""
    if len(packet) < IPV6_HEADER_LEN:
        raise PacketError(f"truncated IPv6 header: {len(packet)} bytes")
    with decoding("IPv6 header"):
        ip6 = dpkt.ip6.IP6(packet)
    if ip6.v != 6:
        raise PacketError(f"IPv6 ethertype carries IP version {ip6.v}")
    available = len(packet) - IPV6_HEADER_LEN
    if ip6.plen > available:
        raise PacketError(f"truncated IPv6 payload: {available} of {ip6.plen} bytes")
    payload = packet[IPV6_HEADER_LEN:IPV6_HEADER_LEN + ip6.plen]
    return Ipv6Header(ipaddress.IPv6Address(ip6.src), ipaddress.IPv6Address(ip6.dst),
                      ip6.nxt, ip6.hlim, payload)


def build_ipv6(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, next_header: int,
               payload: bytes, hop_limit: int) -> bytes:
    # dpkt does not fill in plen for us.
    ip6 = dpkt.ip6.IP6(plen=len(payload), nxt=next_header, hlim=hop_limit,
                       src=src.packed, dst=dst.packed, data=payload)
    return bytes(ip6)
