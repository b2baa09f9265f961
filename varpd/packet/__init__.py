"""Packet layer: parse and build the few frames varpd proxies (ARP, NDP, DHCP). No I/O."""

from varpd.packet.arp import ArpRequest, build_arp_reply, build_gratuitous_arp, parse_arp_request
from varpd.packet.classify import classify
from varpd.packet.dhcp import (
    BOOTREPLY, BOOTREQUEST, DHCPACK, DHCPDECLINE, DHCPDISCOVER, DHCPINFORM, DHCPNAK, DHCPOFFER,
    DHCPRELEASE, DHCPREQUEST, DhcpFrame, DhcpOption, build_dhcp_reply, parse_dhcp, readdress,
)
from varpd.packet.errors import PacketError
from varpd.packet.mac import BROADCAST_MAC, bytes_to_mac, is_multicast_mac, mac_to_bytes, normalize_mac
from varpd.packet.ndp import (
    NeighborSolicitation, build_neighbor_advertisement, build_unsolicited_na,
    parse_neighbor_solicitation,
)

__all__ = [
    "ArpRequest", "BOOTREPLY", "BOOTREQUEST", "BROADCAST_MAC", "DHCPACK", "DHCPDECLINE",
    "DHCPDISCOVER", "DHCPINFORM", "DHCPNAK", "DHCPOFFER", "DHCPRELEASE", "DHCPREQUEST",
    "DhcpFrame", "DhcpOption", "NeighborSolicitation", "PacketError", "build_arp_reply",
    "build_dhcp_reply", "build_gratuitous_arp", "build_neighbor_advertisement",
    "build_unsolicited_na", "bytes_to_mac", "classify", "is_multicast_mac", "mac_to_bytes",
    "normalize_mac", "parse_arp_request", "parse_dhcp", "parse_neighbor_solicitation", "readdress",
]
