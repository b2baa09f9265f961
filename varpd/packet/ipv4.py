"""Minimal IPv4/UDP framing for the DHCP path."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dpkt

from varpd.packet.checksum import internet_checksum
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
