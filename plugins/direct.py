"""direct: a point-to-point overlay; every frame goes to one fixed VTEP.

Properties:

- ``direct/dest_ip`` (IP, required): the remote VTEP.  Refused, as by illumos
  and more: IPv4-mapped IPv6 (``::ffff:a.b.c.d``, write the IPv4 address),
  6to4 (``2002::/16``), multicast and unspecified addresses, and an address of
  the other family than ``vxlan/listen_ip`` (a Linux VXLAN device cannot mix them).
- ``direct/dest_port`` (uint 1-65535, default 4789): the remote VTEP's UDP port.
  illumos marks it required for VXLAN; here it defaults to 4789, the IANA VXLAN
  port, which is what nearly every peer listens on.

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
from varpd.model.addresses import check_vtep

_SIX_TO_FOUR = IPv6Network("2002::/16")
VXLAN_PORT = 4789


def check_dest_ip(ip: Any) -> None:
    """Raise PropertyError (with the reason) if `ip` cannot be a VTEP address."""
    name = "direct/dest_ip"
    if isinstance(ip, IPv6Address):
        if ip in _SIX_TO_FOUR:
            raise PropertyError(name, f"{ip} is a 6to4 address (2002::/16): use the IPv4 address or a native IPv6 one")
    try:
        check_vtep(ip)
    except ValueError as exc:
        raise PropertyError(name, str(exc)) from None


class DirectBackend(Backend):
    """POINT mode: `default()` and `lookup()` always answer the one configured destination."""

    name = "direct"
    mode = PluginMode.POINT
    properties = (
        PropertySpec("direct/dest_ip", PropType.IP, Protection.REQUIRED,
                     description="underlay address of the one remote VTEP"),
        # illumos requires it; 4789 (the IANA VXLAN port) is the only sensible default.
        PropertySpec("direct/dest_port", PropType.UINT, Protection.WRITE, default=VXLAN_PORT, minimum=1,
                     maximum=65535, description="UDP port of the remote VTEP (default 4789)"),
    )

    def __init__(self, ctx: OverlayContext, props: dict[str, Any]) -> None:
        super().__init__(ctx, props)
        ip = props.get("direct/dest_ip")
        if ip is None:
            raise PropertyError("direct/dest_ip", "unset required property")
        check_dest_ip(ip)
        if ip.version != ctx.listen_ip.version:
            raise PropertyError("direct/dest_ip",
                                f"{ip} is not of the same family as vxlan/listen_ip {ctx.listen_ip}")
        port = int(props.get("direct/dest_port", VXLAN_PORT))
        if not 1 <= port <= 65535:
            raise PropertyError("direct/dest_port", f"{port} is outside 1-65535")
        self.dest = Destination(ip, port)

    async def default(self) -> Destination:
        return self.dest

    async def lookup(self, mac: str) -> Destination:
        return self.dest
