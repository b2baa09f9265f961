"""Internet checksums (RFC 1071) and the pseudo-headers they cover."""

from __future__ import annotations

import ipaddress
import struct

import dpkt


def internet_checksum(data: bytes) -> int:
    """Ones'-complement checksum of data; 0 over data that already holds a valid sum."""
    return dpkt.in_cksum(data)


def ipv4_pseudo_header(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address,
                       proto: int, length: int) -> bytes:
    return struct.pack(">4s4sxBH", src.packed, dst.packed, proto, length)


def ipv6_pseudo_header(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address,
                       next_header: int, length: int) -> bytes:
    """RFC 8200 §8.1 pseudo-header used by ICMPv6/UDP/TCP over IPv6."""
    return struct.pack(">16s16sI3xB", src.packed, dst.packed, length, next_header)
