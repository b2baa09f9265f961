"""Minimal IPv4/UDP framing for the DHCP path."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dpkt

from varpd.packet.checksum import internet_checksum, ipv4_pseudo_header
from varpd.packet.errors import PacketError
from varpd.packet.ethernet import decoding

IP_PROTO_UDP = 17
UDP_HEADER_LEN = 8
_IP_MF = 0x2000
_IP_OFFMASK = 0x1FFF


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    src_ip: ipaddress.IPv4Address
    dst_ip: ipaddress.IPv4Address
    src_port: int
    dst_port: int
    payload: bytes  # exactly UDP-length minus header bytes


def parse_udp4(packet: bytes, ports: frozenset[tuple[int, int]] | None = None) -> UdpDatagram | None:
    """The UDP datagram in an IPv4 packet, None for other protocols, fragments or unwanted ports.

    dpkt trusts the IP and UDP length fields blindly (it slices), so they are checked here.
    The UDP checksum is *not* verified: guests with checksum offload hand us partial sums.
    """
    if len(packet) < 20:
        raise PacketError(f"truncated IPv4 header: {len(packet)} bytes")
    with decoding("IPv4 header"):
        ip = dpkt.ip.IP(packet)
    if ip.v != 4:
        raise PacketError(f"IPv4 ethertype carries IP version {ip.v}")
    header_len = ip.hl * 4
    if ip.len < header_len or ip.len > len(packet):
        raise PacketError(f"IPv4 total length {ip.len} invalid for {len(packet)} bytes")
    if ip.p != IP_PROTO_UDP or ip._flags_offset & (_IP_MF | _IP_OFFMASK):
        return None
    if internet_checksum(packet[:header_len]) != 0:
        raise PacketError("bad IPv4 header checksum")
    segment = packet[header_len:ip.len]
    if len(segment) < UDP_HEADER_LEN:
        raise PacketError(f"truncated UDP header: {len(segment)} bytes")
    with decoding("UDP header"):
        udp = dpkt.udp.UDP(segment)
    if ports is not None and (udp.sport, udp.dport) not in ports:
        return None
    if not UDP_HEADER_LEN <= udp.ulen <= len(segment):
        raise PacketError(f"UDP length {udp.ulen} invalid for {len(segment)} bytes")
    return UdpDatagram(ipaddress.IPv4Address(ip.src), ipaddress.IPv4Address(ip.dst),
                       udp.sport, udp.dport, segment[UDP_HEADER_LEN:udp.ulen])


def build_udp4(src_ip: ipaddress.IPv4Address, dst_ip: ipaddress.IPv4Address, src_port: int,
               dst_port: int, payload: bytes, ttl: int = 64) -> bytes:
    """IPv4+UDP with both checksums computed (dpkt fills them while sum == 0; ulen it leaves to us)."""
    udp = dpkt.udp.UDP(sport=src_port, dport=dst_port, ulen=UDP_HEADER_LEN + len(payload),
                       sum=0, data=payload)
    ip = dpkt.ip.IP(ttl=ttl, p=IP_PROTO_UDP, src=src_ip.packed, dst=dst_ip.packed, sum=0, data=udp)
    return bytes(ip)


def _udp4_sum(packet: bytes) -> tuple[int, int, int]:
    """(offset of the UDP checksum field, the checksum it should hold, the one it holds)."""
    header_len = (packet[0] & 0x0F) * 4
    ulen = int.from_bytes(packet[header_len + 4:header_len + 6], "big")
    if ulen < UDP_HEADER_LEN or header_len + ulen > len(packet):
        raise PacketError(f"UDP length {ulen} invalid for a {len(packet)}-byte IPv4 packet")
    segment = bytearray(packet[header_len:header_len + ulen])
    held = int.from_bytes(segment[6:8], "big")
    segment[6:8] = b"\x00\x00"
    src, dst = ipaddress.IPv4Address(packet[12:16]), ipaddress.IPv4Address(packet[16:20])
    want = internet_checksum(ipv4_pseudo_header(src, dst, IP_PROTO_UDP, ulen) + bytes(segment)) or 0xFFFF
    return header_len + 6, want, held


def udp4_checksum_ok(packet: bytes) -> bool:
    """True when the UDP checksum of an IPv4 packet is right or absent (0: the sender chose none)."""
    _, want, held = _udp4_sum(packet)
    return held in (0, want)


def finish_udp4_checksum(packet: bytes) -> bytes:
    """The packet with its UDP checksum computed in full: a frame captured from a local sender with
    TX offload holds only the pseudo-header sum (CHECKSUM_PARTIAL), which no receiver accepts."""
    offset, want, _ = _udp4_sum(packet)
    return bytes(packet[:offset]) + want.to_bytes(2, "big") + bytes(packet[offset + 2:])
