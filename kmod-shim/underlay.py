"""Where a VTEP's listen address lives: the interface holding it in a namespace, and that interface's MTU.

A VXLAN device whose local address the namespace does not have cannot send (the kernel finds
no route from that source) and shows no error, so the daemon asks here before calling an
overlay ONLINE. The interface holding the address is also the underlay a VXLAN device without
``vxlan/underlay_dev`` really uses: its MTU, less the encapsulation, is the overlay's.
"""
from __future__ import annotations

import errno as _errno
from dataclasses import dataclass
from ipaddress import ip_address
from socket import AF_INET, AF_INET6

from pyroute2.netlink.exceptions import NetlinkError

from .device import _get_link, _ipr
from .types import IPAddress, KmodError

__all__ = ["LocalAddress", "local_address", "set_link_mtu", "link_mac", "VXLAN_HEADROOM"]

IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
# outer Ethernet 14 + IP (20 | 40) + UDP 8 + VXLAN 8: the kernel's VXLAN_HEADROOM / VXLAN6_HEADROOM
VXLAN_HEADROOM = {4: 50, 6: 70}


@dataclass(frozen=True, slots=True)
class LocalAddress:
    """`ip` as the namespace has it: on interface `ifname` (index `ifindex`, MTU `mtu`).
    `usable` is False while IPv6 duplicate address detection has not passed (tentative or
    failed): the kernel does not send from such an address."""

    ip: IPAddress
    ifindex: int
    ifname: str
    mtu: int
    usable: bool = True


def _address_of(msg) -> IPAddress | None:
    raw = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
    return None if raw is None else ip_address(raw)


async def local_address(ip: IPAddress, netns: str | None = None) -> LocalAddress | None:
    """The interface of namespace `netns` holding `ip`, or None when it holds none (KmodError if
    the namespace does not exist)."""
    async with _ipr(netns) as ipr:
        family = AF_INET if ip.version == 4 else AF_INET6
        for msg in [m async for m in await ipr.addr("dump", family=family)]:
            if _address_of(msg) != ip:
                continue
            flags = msg.get("IFA_FLAGS") or msg["flags"]
            link = await _get_link(ipr, index=msg["index"])
            if link is None:  # removed between the two answers: as good as absent
                return None
            return LocalAddress(ip, msg["index"], link.get("IFLA_IFNAME"), link.get("IFLA_MTU"),
                                not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED))
    return None


async def set_link_mtu(name: str, mtu: int, netns: str | None = None) -> None:
    async with _ipr(netns) as ipr:
        link = await _get_link(ipr, ifname=name)
        if link is None:
            raise KmodError(f"device {name!r} not found")
        if link.get("IFLA_MTU") == mtu:
            return
        try:
            await ipr.link("set", index=link["index"], mtu=mtu)
        except NetlinkError as exc:
            reason = _errno.errorcode.get(exc.code, exc.code)
            raise KmodError(f"setting the MTU of {name!r} to {mtu} failed: {reason}") from exc


async def link_mac(name: str, netns: str | None = None) -> str | None:
    """The MAC of `name` in `netns` (/sys/class/net shows only the namespace /sys was mounted in)."""
    async with _ipr(netns) as ipr:
        link = await _get_link(ipr, ifname=name)
        return None if link is None else link.get("IFLA_ADDRESS")
