"""direct: a point-to-point overlay; every frame goes to one fixed VTEP.

The daemon programs it as one all-zeros FDB entry, so broadcast and multicast
(ARP included) cross the tunnel too: nothing needs proxying.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network
from typing import Any

from varpd.backend.base import Backend, OverlayContext, PluginMode
from varpd.backend.errors import PropertyError
from varpd.backend.properties import PropertySpec, PropType, Protection
from varpd.model import Destination

_SIX_TO_FOUR = IPv6Network("2002::/16")


class DirectBackend(Backend):
    name = "direct"
    mode = PluginMode.POINT
    properties = (
        PropertySpec("direct/dest_ip", PropType.IP, Protection.REQUIRED,
                     description="underlay address of the one remote VTEP"),
        # illumos requires it; 4789 (the IANA VXLAN port) is the only sensible default.
        PropertySpec("direct/dest_port", PropType.UINT, Protection.WRITE, default=4789, minimum=1, maximum=65535,
                     description="UDP port of the remote VTEP"),
    )

    def __init__(self, ctx: OverlayContext, props: dict[str, Any]) -> None:
        super().__init__(ctx, props)
        ip = props["direct/dest_ip"]
        if ip.is_multicast or ip.is_unspecified:
            raise PropertyError("direct/dest_ip", f"{ip} is not a unicast address")
        if isinstance(ip, IPv6Address) and (ip.ipv4_mapped is not None or ip in _SIX_TO_FOUR):
            raise PropertyError("direct/dest_ip", f"{ip} is IPv4-mapped or 6to4: use the IPv4 address")
        if ip.version != ctx.listen_ip.version:
            raise PropertyError("direct/dest_ip", f"{ip} is not of the same family as vxlan/listen_ip {ctx.listen_ip}")
        self.dest = Destination(ip, int(props["direct/dest_port"]))

    async def default(self) -> Destination:
        return self.dest

    async def lookup(self, mac: str) -> Destination:
        return self.dest
