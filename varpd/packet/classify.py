"""Sort a guest frame into the one proxy that handles it, in illumos varpd order."""

from __future__ import annotations

from varpd.packet.arp import ArpRequest, parse_arp_request
from varpd.packet.dhcp import DhcpFrame, parse_dhcp
from varpd.packet.errors import PacketError
from varpd.packet.ethernet import ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, parse_ethernet
from varpd.packet.ndp import NeighborSolicitation, parse_neighbor_solicitation

Classified = ArpRequest | NeighborSolicitation | DhcpFrame


def classify(frame: bytes) -> Classified | None:
    """ARP request, Neighbor Solicitation, DHCP frame, or None for anything else.

    Raises only PacketError, whatever the bytes: this runs on untrusted guest traffic.
    """
    try:
        eth = parse_ethernet(frame)
        if eth is None:
            return None
        if eth.ethertype == ETHERTYPE_ARP:
            return parse_arp_request(frame)
        if eth.ethertype == ETHERTYPE_IPV6:
            return parse_neighbor_solicitation(frame)
        if eth.ethertype == ETHERTYPE_IPV4:
            return parse_dhcp(frame)
        return None
    except PacketError:
        raise
    except Exception as exc:  # last line of defence: a parser bug must not kill the daemon
        raise PacketError(f"unparseable frame: {exc!r}") from exc
