"""Proxy ARP: recognise IPv4-over-Ethernet requests and forge the replies (illumos varpd_arp)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dpkt

from varpd.packet.errors import PacketError
from varpd.packet.ethernet import ETHERTYPE_ARP, ETHERTYPE_IPV4, build_ethernet, decoding, parse_ethernet
from varpd.packet.mac import BROADCAST_MAC, bytes_to_mac, mac_to_bytes

_ARP_HRD_ETHER = 1
_ARP_LEN = 28


@dataclass(frozen=True, slots=True)
class ArpRequest:
    """An ARP who-has; src_mac is the Ethernet source, sender_mac the ARP sender hardware address."""

    src_mac: str
    sender_mac: str
    sender_ip: ipaddress.IPv4Address
    target_ip: ipaddress.IPv4Address
    vlan: int | None = None

    @property
    def is_probe(self) -> bool:
        """RFC 5227 probe (sender 0.0.0.0): the caller decides whether to answer it."""
        return self.sender_ip == ipaddress.IPv4Address(0)


def parse_arp_request(frame: bytes) -> ArpRequest | None:
    """The request in frame, or None for non-ARP, replies, non-IPv4 ARP and gratuitous ARP."""
    eth = parse_ethernet(frame)
    if eth is None or eth.ethertype != ETHERTYPE_ARP:
        return None
    if len(eth.payload) < _ARP_LEN:
        raise PacketError(f"truncated ARP: {len(eth.payload)} of {_ARP_LEN} bytes")
    with decoding("ARP"):
        arp = dpkt.arp.ARP(eth.payload)
    if (arp.hrd, arp.pro, arp.hln, arp.pln) != (_ARP_HRD_ETHER, ETHERTYPE_IPV4, 6, 4):
        return None
    if arp.op != dpkt.arp.ARP_OP_REQUEST:
        return None
    sender_ip = ipaddress.IPv4Address(arp.spa)
    target_ip = ipaddress.IPv4Address(arp.tpa)
    if sender_ip == target_ip:
        return None  # gratuitous: an announcement, nothing to answer
    return ArpRequest(src_mac=eth.src_mac, sender_mac=bytes_to_mac(arp.sha),
                      sender_ip=sender_ip, target_ip=target_ip, vlan=eth.vlan)


def _arp_frame(op: int, dst_mac: str, sha: str, spa: ipaddress.IPv4Address, tha: str,
               tpa: ipaddress.IPv4Address, vlan: int | None) -> bytes:
    try:
        spa, tpa = ipaddress.IPv4Address(spa), ipaddress.IPv4Address(tpa)
    except ValueError as exc:
        raise PacketError(str(exc)) from exc
    arp = dpkt.arp.ARP(hrd=_ARP_HRD_ETHER, pro=ETHERTYPE_IPV4, hln=6, pln=4, op=op,
                       sha=mac_to_bytes(sha), spa=spa.packed, tha=mac_to_bytes(tha), tpa=tpa.packed)
    return build_ethernet(dst_mac, sha, ETHERTYPE_ARP, bytes(arp), vlan)


def build_arp_reply(req: ArpRequest, answer_mac: str) -> bytes:
    """'target_ip is-at answer_mac', unicast to the asker on the asker's VLAN."""
    return _arp_frame(dpkt.arp.ARP_OP_REPLY, req.sender_mac, answer_mac, req.target_ip,
                      req.sender_mac, req.sender_ip, req.vlan)


def build_gratuitous_arp(mac: str, ip: ipaddress.IPv4Address, *, vlan: int | None = None) -> bytes:
    """RFC 5227 announcement (broadcast request, sender == target) to refresh peers' caches."""
    return _arp_frame(dpkt.arp.ARP_OP_REQUEST, BROADCAST_MAC, mac, ip, "00:00:00:00:00:00", ip, vlan)
