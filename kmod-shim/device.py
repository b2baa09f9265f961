"""VXLAN device lifecycle (create / adopt / delete), via pyroute2 ``AsyncIPRoute``.

Not a hot path: pyroute2 is fine here.  For another namespace the netlink socket is made
in it by a thread (``_netns.run_in_netns``) and handed to ``AsyncIPRoute(use_socket=...)``:
pyroute2's own ``netns=`` forks a child whose signals reach the daemon's event loop and stop
it, and it creates a missing namespace unless told not to.  A missing namespace is a KmodError.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import socket
from socket import AF_INET6
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import AsyncIterator

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ._netns import run_in_netns
from .isolation import isolate_link
from .netlink import NETLINK_ROUTE
from .types import DeviceConflict, DeviceHandle, DeviceSpec, KmodError

__all__ = ["ensure_overlay", "delete_overlay", "delete_bridge", "find_overlay", "link_index"]


def _wanted_flags(spec: DeviceSpec) -> tuple[tuple[str, int, str], ...]:
    """Flags the device must have: (IFLA_VXLAN_* attribute, wanted value, label)."""
    return (
        ("IFLA_VXLAN_LEARNING", 0, "learning"),
        ("IFLA_VXLAN_L2MISS", int(spec.l2miss), "l2miss"),
        ("IFLA_VXLAN_L3MISS", int(spec.l3miss), "l3miss"),
        ("IFLA_VXLAN_PROXY", int(spec.proxy), "proxy"),
    )


def _route_socket() -> socket.socket:
    # SOCK_DGRAM: pyroute2's asyncio endpoint takes only datagram sockets (netlink treats both alike)
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)


@contextlib.asynccontextmanager
async def _ipr(netns: str | None) -> AsyncIterator[AsyncIPRoute]:
    sock = run_in_netns(netns, _route_socket) if netns is not None else None
    ipr = AsyncIPRoute(use_socket=sock) if sock is not None else AsyncIPRoute()
    try:
        await ipr.setup_endpoint()
        yield ipr
    finally:
        with contextlib.suppress(Exception):
            ipr.close()
        if sock is not None:
            sock.close()  # pyroute2 leaves a socket it was given open


async def _get_link(ipr: AsyncIPRoute, *, ifname: str | None = None, index: int | None = None):
    try:
        if ifname is not None:
            res = await ipr.link("get", ifname=ifname)
        else:
            res = await ipr.link("get", index=index)
    except NetlinkError as exc:
        if exc.code in (_errno.ENODEV, _errno.ENOENT):
            return None
        raise
    res = list(res) if not hasattr(res, "__aiter__") else [m async for m in res]
    return res[0] if res else None


async def _underlay_index(ipr: AsyncIPRoute, name: str | None) -> int | None:
    """The ifindex of the underlay device a VXLAN device is bound to (None: unbound)."""
    if name is None:
        return None
    ul = await _get_link(ipr, ifname=name)
    if ul is None:
        raise KmodError(f"underlay device {name!r} not found")
    return ul["index"]


async def _delete_link(ipr: AsyncIPRoute, index: int, label: str) -> None:
    """Delete a link; one already gone is not an error."""
    try:
        await ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code not in (_errno.ENODEV, _errno.ENOENT):
            raise KmodError(f"deleting {label} failed: {exc}") from exc


async def _create_link(ipr: AsyncIPRoute, label: str, **kw):
    """Create a link; (link, True), or (link, False) when someone else created it first."""
    created = False
    try:
        await ipr.link("add", **kw)
        created = True
    except NetlinkError as exc:
        if exc.code != _errno.EEXIST:
            raise KmodError(f"creating {label} {kw['ifname']!r} failed: {exc}") from exc
    link = await _get_link(ipr, ifname=kw["ifname"])
    if link is None:
        raise KmodError(f"{label} {kw['ifname']!r} vanished after creation")
    return link, created


async def _isolate(ipr: AsyncIPRoute, link, netns: str | None) -> None:
    """No host address on a tenant segment (see isolation.py): set before the device is up, and on
    adoption (a device an older varpd made), where the link-local it already got is deleted too.
    A bridge also stops multicast snooping: with it on, the bridge joins the all-snoopers groups
    (224.0.0.106, ff02::6a) and sends IGMP/MLD reports from the host onto the segment."""
    index, name = link["index"], link.get("IFLA_IFNAME")
    isolate_link(index, name, netns)
    if _kind(link) == "bridge":
        await ipr.link("set", index=index, kind="bridge", br_mcast_snooping=0)
    for addr in [m async for m in await ipr.addr("dump", family=AF_INET6)]:
        if addr["index"] == index and str(addr.get("IFA_ADDRESS", "")).lower().startswith("fe80:"):
            with contextlib.suppress(NetlinkError):
                await ipr.addr("del", index=index, address=addr.get("IFA_ADDRESS"), prefixlen=addr["prefixlen"])


def _kind(link) -> str | None:
    li = link.get("IFLA_LINKINFO")
    return li.get("IFLA_INFO_KIND") if li is not None else None


def _vxlan_data(link) -> dict[str, object]:
    li = link.get("IFLA_LINKINFO")
    data = li.get("IFLA_INFO_DATA") if li is not None else None
    if data is None:
        return {}
    out: dict[str, object] = {}
    for name, value in data["attrs"]:
        out[name] = value
    return out


def _as_ip(value) -> IPv4Address | IPv6Address:
    return value if isinstance(value, (IPv4Address, IPv6Address)) else ip_address(value)


def _check_vxlan(spec: DeviceSpec, link, underlay_index: int | None) -> None:
    kind = _kind(link)
    if kind != "vxlan":
        raise DeviceConflict(f"device {spec.name!r} exists but is of kind {kind!r}, not 'vxlan'")
    d = _vxlan_data(link)
    diffs: list[str] = []
    if d.get("IFLA_VXLAN_ID") != spec.vni:
        diffs.append(f"vni (existing {d.get('IFLA_VXLAN_ID')}, wanted {spec.vni})")
    local = _as_ip(spec.local_ip)
    have = d.get("IFLA_VXLAN_LOCAL6") if local.version == 6 else d.get("IFLA_VXLAN_LOCAL")
    if have is None or _as_ip(have) != local:
        existing = d.get("IFLA_VXLAN_LOCAL") or d.get("IFLA_VXLAN_LOCAL6")
        diffs.append(f"local_ip (existing {existing}, wanted {local})")
    if d.get("IFLA_VXLAN_PORT") != spec.port:
        diffs.append(f"port (existing {d.get('IFLA_VXLAN_PORT')}, wanted {spec.port})")
    for attr, want, label in _wanted_flags(spec):
        if int(d.get(attr) or 0) != want:
            diffs.append(f"{label} (existing {d.get(attr)}, wanted {want})")
    for attr in ("IFLA_VXLAN_GROUP", "IFLA_VXLAN_GROUP6"):
        g = d.get(attr)
        if g and not _as_ip(g).is_unspecified:
            diffs.append(f"remote/group (existing {g}, wanted none)")
    if underlay_index is not None and d.get("IFLA_VXLAN_LINK") not in (None, underlay_index):
        diffs.append(f"underlay_dev (existing ifindex {d.get('IFLA_VXLAN_LINK')}, wanted {underlay_index})")
    if spec.mtu is not None and link.get("IFLA_MTU") != spec.mtu:
        diffs.append(f"mtu (existing {link.get('IFLA_MTU')}, wanted {spec.mtu})")
    if diffs:
        raise DeviceConflict(f"vxlan device {spec.name!r} exists with different parameters: " + "; ".join(diffs))


async def ensure_overlay(spec: DeviceSpec, netns: str | None = None) -> DeviceHandle:
    """Create (or adopt an identical existing) VXLAN overlay device; see module docs."""
    local = _as_ip(spec.local_ip)
    if not 0 <= spec.vni < (1 << 24):
        raise KmodError(f"invalid vni {spec.vni}")
    async with _ipr(netns) as ipr:
        underlay_index = await _underlay_index(ipr, spec.underlay_dev)

        created_vxlan = False
        link = await _get_link(ipr, ifname=spec.name)
        if link is not None:
            _check_vxlan(spec, link, underlay_index)
        else:
            kw: dict[str, object] = dict(
                ifname=spec.name,
                kind="vxlan",
                vxlan_id=spec.vni,
                vxlan_port=spec.port,
                vxlan_learning=0,
                vxlan_l2miss=int(spec.l2miss),
                vxlan_l3miss=int(spec.l3miss),
                vxlan_proxy=int(spec.proxy),
            )
            if local.version == 6:
                kw["vxlan_local6"] = str(local)
            else:
                kw["vxlan_local"] = str(local)
            if underlay_index is not None:
                kw["vxlan_link"] = underlay_index
            if spec.mtu is not None:
                kw["mtu"] = spec.mtu
            link, created_vxlan = await _create_link(ipr, "vxlan", **kw)
            if not created_vxlan:  # lost a race: adopt only if identical
                _check_vxlan(spec, link, underlay_index)
        ifindex = link["index"]

        bridge_ifindex = None
        created_bridge = False
        try:
            await _isolate(ipr, link, netns)
            if spec.bridge is not None:
                br = await _get_link(ipr, ifname=spec.bridge)
                if br is None:
                    br, created_bridge = await _create_link(ipr, "bridge", ifname=spec.bridge, kind="bridge")
                elif _kind(br) != "bridge":
                    raise DeviceConflict(f"device {spec.bridge!r} exists but is of kind {_kind(br)!r}, not 'bridge'")
                bridge_ifindex = br["index"]
                await _isolate(ipr, br, netns)
                master = link.get("IFLA_MASTER")
                if master not in (None, 0, bridge_ifindex):
                    raise DeviceConflict(
                        f"vxlan {spec.name!r} is already enslaved to ifindex {master}, not bridge {spec.bridge!r}"
                    )
                if master != bridge_ifindex:
                    await ipr.link("set", index=ifindex, master=bridge_ifindex)
                # a port setting, not the device's: set on every ensure (adoption included)
                await ipr.brport("set", index=ifindex, neigh_suppress=int(spec.neigh_suppress))
                if created_bridge or not (br.get("flags", 0) & 1):
                    await ipr.link("set", index=bridge_ifindex, state="up")
            if not (link.get("flags", 0) & 1):  # IFF_UP
                await ipr.link("set", index=ifindex, state="up")
        except BaseException:
            # undo what this call created
            if created_vxlan:
                with contextlib.suppress(Exception):
                    await ipr.link("del", index=ifindex)
            if created_bridge and bridge_ifindex is not None:
                with contextlib.suppress(Exception):
                    await ipr.link("del", index=bridge_ifindex)
            raise
        return DeviceHandle(
            name=spec.name,
            ifindex=ifindex,
            vni=spec.vni,
            bridge=spec.bridge,
            bridge_ifindex=bridge_ifindex,
            created_vxlan=created_vxlan,
            created_bridge=created_bridge,
        )


async def delete_overlay(handle: DeviceHandle, netns: str | None = None, *, force: bool = False) -> list[str]:
    """Delete the VXLAN device and, if this code created it, the bridge (see delete_bridge).
    Missing devices are not an error.  Returns the ports that kept the bridge ([]: nothing kept)."""
    async with _ipr(netns) as ipr:
        link = await _get_link(ipr, ifname=handle.name)
        if link is not None:
            if _kind(link) != "vxlan":
                raise DeviceConflict(f"device {handle.name!r} is not a vxlan device; not deleting it")
            await _delete_link(ipr, link["index"], repr(handle.name))
        if handle.created_bridge and handle.bridge:
            return await _delete_bridge(ipr, handle.bridge, force)
    return []


async def delete_bridge(name: str, netns: str | None = None, *, force: bool = False) -> list[str]:
    """Delete bridge `name` if it has no ports, or always with ``force`` (the kernel detaches them).
    Returns the names of the ports that kept it; [] when it is gone (or was not a bridge)."""
    async with _ipr(netns) as ipr:
        return await _delete_bridge(ipr, name, force)


async def _delete_bridge(ipr: AsyncIPRoute, name: str, force: bool) -> list[str]:
    br = await _get_link(ipr, ifname=name)
    if br is None or _kind(br) != "bridge":
        return []
    if not force:
        ports = [p.get("IFLA_IFNAME") async for p in await ipr.link("dump") if p.get("IFLA_MASTER") == br["index"]]
        if ports:
            return sorted(ports)
    await _delete_link(ipr, br["index"], f"bridge {name!r}")
    return []


async def find_overlay(name: str, netns: str | None = None) -> DeviceHandle | None:
    """Describe an existing VXLAN device (created_* are False); None if absent or not vxlan."""
    async with _ipr(netns) as ipr:
        link = await _get_link(ipr, ifname=name)
        if link is None or _kind(link) != "vxlan":
            return None
        d = _vxlan_data(link)
        master = link.get("IFLA_MASTER") or None
        bridge = None
        if master:
            br = await _get_link(ipr, index=master)
            if br is not None:
                bridge = br.get("IFLA_IFNAME")
        return DeviceHandle(
            name=name,
            ifindex=link["index"],
            vni=int(d.get("IFLA_VXLAN_ID") or 0),
            bridge=bridge,
            bridge_ifindex=master,
            created_vxlan=False,
            created_bridge=False,
        )


async def link_index(name: str, netns: str | None = None) -> int | None:
    async with _ipr(netns) as ipr:
        link = await _get_link(ipr, ifname=name)
        return None if link is None else link["index"]
