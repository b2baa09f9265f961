"""Properties the daemon itself owns for every overlay (encapsulation, link, DHCP server).

Backends declare their own (`files/config`, `direct/dest_ip`, ...); both sets are
validated by the same property system.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from varpd.backend.errors import PropertyError
from varpd.backend.properties import PropertySpec, PropType, Protection

VXLAN_PROPERTIES: tuple[PropertySpec, ...] = (
    PropertySpec("vxlan/listen_ip", PropType.IP, Protection.REQUIRED,
                 description="underlay address this host's VTEP listens on (not multicast)"),
    PropertySpec("vxlan/listen_port", PropType.UINT, Protection.READ, default=4789, minimum=1, maximum=65535,
                 description="UDP port of the VXLAN tunnel"),
    PropertySpec("vxlan/underlay_dev", PropType.STRING, Protection.READ,
                 description="underlay interface to bind the VTEP to (optional)"),
    PropertySpec("vxlan/flood", PropType.STRING, Protection.READ, default="none", choices=("none", "replicate"),
                 description="broadcast and multicast: none (never leave the host; ARP/NDP answered from the "
                             "mapping) or replicate (one copy to every remote VTEP; needs push mode and a bridge)"),
    PropertySpec("vxlan/flood_peers", PropType.STRING, Protection.WRITE,
                 description="more VTEPs to flood to with replicate, ip[:port] ([IPv6]:port) separated by commas "
                             "or spaces: VTEPs that hold no VNIC of the mapping (a hand-made peer, a gateway)"),
    PropertySpec("link/mtu", PropType.UINT, Protection.READ, minimum=576, maximum=9000,
                 description="MTU of the overlay device (kernel default if unset)"),
)

DHCP_PROPERTIES: tuple[PropertySpec, ...] = (
    PropertySpec("dhcp/native", PropType.BOOL, Protection.WRITE, default=False,
                 description="answer DHCPv4 from the mapping's arp address when no dhcp-proxy is set"),
    PropertySpec("dhcp/subnet", PropType.STRING, Protection.WRITE,
                 description="overlay IPv4 subnet handed out by the native DHCP server, e.g. 10.55.55.0/24"),
    PropertySpec("dhcp/router", PropType.IP, Protection.WRITE, description="default gateway offered (optional)"),
    PropertySpec("dhcp/dns", PropType.STRING, Protection.WRITE,
                 description="comma-separated DNS servers offered (optional)"),
    PropertySpec("dhcp/lease", PropType.UINT, Protection.WRITE, default=3600, minimum=10, maximum=31_536_000,
                 description="lease time in seconds (renewal at half of it)"),
    PropertySpec("dhcp/server_ip", PropType.IP, Protection.WRITE,
                 description="server identifier: an unused address of dhcp/subnet that varpd answers ARP for "
                             "on the bridge, so renewals reach it (default: the subnet's last address)"),
)

DAEMON_PROPERTIES = VXLAN_PROPERTIES + DHCP_PROPERTIES


@dataclass(frozen=True, slots=True)
class NativeDhcp:
    """Validated settings of the native DHCP server of one overlay."""

    subnet: IPv4Network
    server_ip: IPv4Address
    router: IPv4Address | None
    dns: tuple[IPv4Address, ...]
    lease: int


def native_dhcp(values: dict[str, Any]) -> NativeDhcp | None:
    """Build the native DHCP settings, or None when disabled; PropertyError names the bad one."""
    if not values.get("dhcp/native"):
        return None
    raw_subnet = values.get("dhcp/subnet")
    if not raw_subnet:
        raise PropertyError("dhcp/subnet", "required when dhcp/native is true")
    try:
        subnet = ipaddress.IPv4Network(str(raw_subnet), strict=False)
    except ValueError as exc:
        raise PropertyError("dhcp/subnet", f"{raw_subnet!r} is not an IPv4 subnet ({exc})") from None
    router = values.get("dhcp/router")
    if router is not None and (router.version != 4 or router not in subnet):
        raise PropertyError("dhcp/router", f"{router} is not an IPv4 address in {subnet}")
    try:
        dns = tuple(IPv4Address(s.strip()) for s in str(values.get("dhcp/dns") or "").split(",") if s.strip())
    except ValueError as exc:
        raise PropertyError("dhcp/dns", str(exc)) from None
    # renewals are unicast to the server identifier: varpd answers ARP for it, so it must be in the
    # subnet and owned by nobody else (the router is a real machine, and would lose its traffic)
    server = values.get("dhcp/server_ip") or subnet.broadcast_address - 1
    if server.version != 4 or server not in subnet or server in (subnet.network_address, subnet.broadcast_address):
        raise PropertyError("dhcp/server_ip", f"{server} is not a host address of {subnet}")
    if server == router:
        raise PropertyError("dhcp/server_ip", f"{server} is the router: varpd answers ARP for the server "
                                              "identifier, so it must be an address no machine uses")
    return NativeDhcp(subnet, server, router, dns, int(values["dhcp/lease"]))
