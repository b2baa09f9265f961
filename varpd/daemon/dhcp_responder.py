"""DHCPv4 across an overlay with no broadcast: proxy to a MAC, or answer natively.

illumos varpd re-addresses a client's broadcast to the `dhcp-proxy` MAC of its
record.  We also re-address a server's broadcast reply to the client's chaddr
(otherwise a server that sets the broadcast bit can never answer), and can
answer ourselves from the mapping so the guest gets the address ARP resolves.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from varpd.backend.base import Backend
from varpd.daemon.overlay_props import NativeDhcp
from varpd.packet import dhcp as d
from varpd.packet.mac import BROADCAST_MAC

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Forward:
    """Send `frame` to `mac`, wherever it lives (the runtime resolves and programs it first)."""

    frame: bytes
    mac: str


@dataclass(frozen=True, slots=True)
class Inject:
    """Deliver `frame` to a guest on this host."""

    frame: bytes


Action = Forward | Inject | None


async def respond(
    req: d.DhcpFrame, backend: Backend, native: NativeDhcp | None, server_mac: str
) -> Action:
    if req.op == 2:
        if req.dst_mac == BROADCAST_MAC:
            return Forward(d.readdress(req.raw, req.chaddr), req.chaddr)
        return None
    proxy = await backend.dhcp_proxy(req.src_mac)
    if proxy:
        return Forward(d.readdress(req.raw, proxy), proxy)
    if native is None:
        return None
    return await _native_answer(req, backend, native, server_mac)


async def _native_answer(req: d.DhcpFrame, backend: Backend, native: NativeDhcp, server_mac: str) -> Action:
    if req.message_type == d.DHCPINFORM:
        return _inform_answer(req, native, server_mac)
    rec = await backend.record(req.chaddr)
    if rec is None or rec.arp is None or rec.arp not in native.subnet:
        log.info("dhcp: no address for %s in the mapping (or outside %s): not answered", req.chaddr, native.subnet)
        return None
    if req.message_type == d.DHCPDISCOVER:
        kind = d.DHCPOFFER
    elif req.message_type == d.DHCPREQUEST:
        if req.server_id is not None and req.server_id != native.server_ip:
            return None  # the client chose another server
        asked = req.requested_ip or (req.ciaddr if str(req.ciaddr) != "0.0.0.0" else None)
        kind = d.DHCPACK if asked in (None, rec.arp) else d.DHCPNAK
    else:
        return None
    frame = d.build_dhcp_reply(
        req,
        message_type=kind,
        server_mac=server_mac,
        server_ip=native.server_ip,
        yiaddr=rec.arp,
        subnet_mask=native.subnet.netmask,
        router=native.router,
        dns=native.dns,
        lease_seconds=native.lease,
    )
    return Inject(frame)


def _inform_answer(req: d.DhcpFrame, native: NativeDhcp, server_mac: str) -> Action:
    """RFC 2131 §4.3.5: a client that has its address asks only for parameters; the ACK goes to its
    ciaddr with no yiaddr and no lease time."""
    if req.ciaddr not in native.subnet:
        log.info("dhcp: INFORM from %s at %s, outside %s: not answered", req.chaddr, req.ciaddr, native.subnet)
        return None
    return Inject(d.build_dhcp_reply(
        req, message_type=d.DHCPACK, server_mac=server_mac, server_ip=native.server_ip,
        yiaddr=ipaddress.IPv4Address(0), subnet_mask=native.subnet.netmask, router=native.router,
        dns=native.dns, lease_seconds=None))
