"""VNICs: a guest's port on an overlay's bridge (illumos `dladm create-vnic -l overlay0`).

A ``veth`` VNIC is a pair: the host end (the VNIC's name) on the bridge, the guest end with the
guest's MAC in a network namespace (created like ``ip netns add`` when missing).  A ``tap`` VNIC
is a persistent tap on the bridge for a QEMU/libvirt guest, whose MAC QEMU sets.

Either way the port is protected as illumos' ``protection=mac-nospoof``: the guest MAC is a
static sticky FDB entry on the port (a frame forged elsewhere cannot move it), learning is off
and the port is locked, so frames with any other source MAC are dropped where they enter.
The steps are those of scripts/add-guest.sh, in an order that never lets an unprotected port
forward: enslaved, locked and pinned while still down.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import threading
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv6Interface, ip_interface

from pyroute2 import IPRoute
from pyroute2 import netns as _pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError

from ._netns import CLONE_NEWNET, _libc, netns_identity, netns_path, private_mount_reason, run_in_netns
from .device import _delete_link, _get_link, _ipr, _kind
from .types import KmodError

__all__ = ["VnicSpec", "VnicState", "create_vnic", "delete_vnic", "ensure_netns", "link_mtu", "vnic_state"]

NUD_NOARP = 0x40  # `static`
NTF_MASTER = 0x04
NTF_STICKY = 0x40
IFA_F_NODAD = 0x02
IN6_ADDR_GEN_MODE_NONE = 1


@dataclass(frozen=True)
class VnicSpec:
    name: str  # the host end, a port of `bridge`
    mac: str  # the guest's MAC (canonical)
    bridge: str
    mtu: int
    kind: str = "veth"  # "veth" | "tap"
    netns: str | None = None  # veth: the guest end's namespace
    guest_ifname: str = "eth0"
    addresses: tuple[str, ...] = field(default_factory=tuple)  # CIDRs on the guest end


@dataclass(frozen=True)
class VnicState:
    """What the kernel has for a VNIC's host end now."""

    exists: bool
    kind: str | None = None
    bridge: str | None = None
    up: bool = False
    protected: bool = False  # learning off, locked, and the guest MAC pinned on the port


def _is_netns(path: str) -> bool:
    """A live namespace mount (nsfs), not a stale mount point file."""
    return netns_identity(path) is not None


def _create_netns(name: str) -> None:
    """`ip netns add`: a new namespace bind-mounted on /run/netns/NAME (pyroute2's mount code), made
    from a short-lived thread that unshares only itself."""
    path = netns_path(name)
    if os.path.exists(path):  # and not a namespace here: never unlink it (a mount point elsewhere)
        raise KmodError(f"{path} exists but is not a network namespace this daemon can see (made in another "
                        "mount namespace, or after the daemon started in a private one)")
    if "/" not in name and (why := private_mount_reason()):
        raise KmodError(f"network namespace {name!r} does not exist and {why}: create it first with "
                        f"`ip netns add {name}` (at boot: systemctl enable --now varpd-netns@{name}.service)")
    error: list[BaseException] = []

    def worker() -> None:
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare(CLONE_NEWNET) failed: {os.strerror(err)}")
            _pyroute2_netns.attach(name, "thread-self")
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=worker, name=f"varpd-kmod-netns-add-{name}", daemon=True)
    t.start()
    t.join()
    if error:
        with contextlib.suppress(OSError):
            if not _is_netns(path):
                os.unlink(path)
        raise KmodError(f"creating network namespace {name!r} failed: {error[0]}")


async def ensure_netns(name: str) -> bool:
    """The named namespace, created (with lo up) when missing; True if this call created it."""
    if _is_netns(netns_path(name)):
        return False
    await asyncio.to_thread(_create_netns, name)
    await _in_netns(name, lambda ipr: ipr.link("set", index=1, state="up"))
    return True


def delete_netns(name: str) -> None:
    """`ip netns del` of a namespace this module created (its links go with it)."""
    with contextlib.suppress(OSError):
        _pyroute2_netns.remove(name)


def _write_sysctl(netns: str | None, settings: dict[str, str]) -> None:
    def write() -> None:
        for key, value in settings.items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as fh:
                fh.write(value)

    try:
        run_in_netns(netns, write)
    except OSError as exc:
        raise KmodError(f"sysctl {', '.join(settings)} in {netns or 'the host namespace'} failed: {exc}") from exc


def link_exists(name: str) -> bool:
    """Whether ``name`` is a link of the daemon's namespace: an ioctl, no netlink, so asking it for
    every VNIC at every retry costs nothing."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


async def link_mtu(name: str, netns: str | None = None) -> int | None:
    async with _ipr(netns) as ipr:
        link = await _get_link(ipr, ifname=name)
        return None if link is None else link.get("IFLA_MTU")


async def _collect(res) -> list:
    return [m async for m in res] if hasattr(res, "__aiter__") else list(res)


def _brport(link) -> dict[str, object]:
    pi = link.get("IFLA_PROTINFO")
    return {} if pi is None else {name: value for name, value in pi["attrs"]}


async def vnic_state(spec: VnicSpec) -> VnicState:
    async with _ipr(None) as ipr:
        link = await _get_link(ipr, ifname=spec.name)
        if link is None:
            return VnicState(False)
        kind = _kind(link)
        bridge = None
        master = link.get("IFLA_MASTER")
        if master:
            br = await _get_link(ipr, index=master)
            bridge = br.get("IFLA_IFNAME") if br is not None else None
        protected = False
        if bridge == spec.bridge:
            ports = await _collect(await ipr.brport("show", index=link["index"]))
            port = _brport(ports[0]) if ports else {}
            pinned = any(e.get("NDA_LLADDR") == spec.mac and e["state"] & NUD_NOARP and e["flags"] & NTF_STICKY
                         for e in await _collect(await ipr.fdb("dump", ifindex=link["index"])))
            protected = port.get("IFLA_BRPORT_LEARNING") == 0 and port.get("IFLA_BRPORT_LOCKED") == 1 and pinned
        return VnicState(True, "tap" if kind == "tun" else kind, bridge, bool(link.get("flags", 0) & 1), protected)


async def _protect(ipr, index: int, bridge_index: int, mac: str) -> None:
    """Enslave, lock and pin: only `mac` may enter the bridge through this port."""
    await ipr.link("set", index=index, master=bridge_index)
    await ipr.brport("set", index=index, learning=0, locked=1)
    await ipr.fdb("replace", ifindex=index, lladdr=mac, state=NUD_NOARP, flags=NTF_MASTER | NTF_STICKY)


def _in_netns(netns: str, fn):
    """`fn(ipr)` with a synchronous IPRoute opened inside `netns` by a thread there: pyroute2's own
    netns= support forks a child, whose signals would reach the daemon's event loop (the wakeup fd
    is inherited) and stop it."""
    def work():
        with IPRoute() as ipr:
            return fn(ipr)

    return asyncio.to_thread(run_in_netns, netns, work)


def _guest_link(ipr, name: str):
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


async def _configure_guest(spec: VnicSpec) -> None:
    """The guest end, as add-guest.sh: IPv6 on with no DAD, addrgenmode none before it goes up (only
    the mapping's addresses, so proxied NDP answers for them), IPv4 before up, IPv6 after (nodad)."""
    dev = spec.guest_ifname
    _write_sysctl(spec.netns, {"net.ipv6.conf.all.disable_ipv6": "0", f"net.ipv6.conf.{dev}.disable_ipv6": "0",
                               f"net.ipv6.conf.{dev}.accept_dad": "0"})
    addrs = [ip_interface(a) for a in spec.addresses]

    def configure(ipr) -> None:
        index = _guest_link(ipr, dev)
        if index is None:
            raise KmodError(f"{dev} did not appear in namespace {spec.netns!r}")
        ipr.link("set", index=index, IFLA_AF_SPEC={
            "attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]})]})
        for a in (a for a in addrs if isinstance(a, IPv4Interface)):
            ipr.addr("add", index=index, address=str(a.ip), prefixlen=a.network.prefixlen)
        ipr.link("set", index=index, state="up")
        for a in (a for a in addrs if isinstance(a, IPv6Interface)):
            ipr.addr("add", index=index, address=str(a.ip), prefixlen=a.network.prefixlen, flags=IFA_F_NODAD)

    try:
        await _in_netns(spec.netns, configure)
    except NetlinkError as exc:
        raise KmodError(f"configuring {dev} in namespace {spec.netns!r} failed: {exc}") from exc


async def create_vnic(spec: VnicSpec) -> None:
    """Create the VNIC; all-or-nothing: on any failure what this call made is removed (the
    pair, the tap, a namespace it created) and KmodError says which step failed."""
    made_ns = False
    made_link = False
    try:
        async with _ipr(None) as ipr:
            br = await _get_link(ipr, ifname=spec.bridge)
            if br is None or _kind(br) != "bridge":
                raise KmodError(f"bridge {spec.bridge!r} not found")
            if await _get_link(ipr, ifname=spec.name) is not None:
                raise KmodError(f"a link named {spec.name!r} already exists")
            if spec.kind == "veth":
                if spec.netns is None:
                    raise KmodError("a veth VNIC needs a namespace for its guest end")
                made_ns = await ensure_netns(spec.netns)
                if await _in_netns(spec.netns, lambda gipr: _guest_link(gipr, spec.guest_ifname)) is not None:
                    raise KmodError(f"namespace {spec.netns!r} already has a link {spec.guest_ifname!r}")
                fd = os.open(netns_path(spec.netns), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    await _add(ipr, ifname=spec.name, kind="veth", mtu=spec.mtu,
                               peer={"ifname": spec.guest_ifname, "address": spec.mac, "mtu": spec.mtu,
                                     "net_ns_fd": fd})
                finally:
                    os.close(fd)
            elif spec.kind == "tap":
                await _add(ipr, ifname=spec.name, kind="tuntap", mode="tap")
            else:
                raise KmodError(f"unknown VNIC type {spec.kind!r}")
            made_link = True
            link = await _get_link(ipr, ifname=spec.name)
            if link is None:
                raise KmodError(f"{spec.name!r} vanished after creation")
            index = link["index"]
            if spec.kind == "tap":
                await ipr.link("set", index=index, mtu=spec.mtu)
            _write_sysctl(None, {f"net.ipv6.conf.{spec.name}.disable_ipv6": "1"})  # a bridge port needs no address
            await _protect(ipr, index, br["index"], spec.mac)
            if spec.kind == "veth":
                await _configure_guest(spec)
            await ipr.link("set", index=index, state="up")
    except BaseException as exc:
        if made_link:
            with contextlib.suppress(Exception):
                await delete_vnic(spec.name)
        if made_ns:
            delete_netns(spec.netns)
        if isinstance(exc, NetlinkError):
            raise KmodError(f"creating VNIC {spec.name!r} failed: {exc}") from exc
        raise


async def _add(ipr, **kw) -> None:
    try:
        await ipr.link("add", **kw)
    except NetlinkError as exc:
        raise KmodError(f"creating {kw['kind']} {kw['ifname']!r} failed: {exc}") from exc
    except OSError as exc:  # the tap ioctl
        raise KmodError(f"creating {kw['kind']} {kw['ifname']!r} failed: {exc.strerror or exc}") from exc


async def reprotect_vnic(spec: VnicSpec) -> None:
    """An existing VNIC (daemon restart, bridge re-created): on the bridge, locked, pinned and up again."""
    async with _ipr(None) as ipr:
        br = await _get_link(ipr, ifname=spec.bridge)
        link = await _get_link(ipr, ifname=spec.name)
        if br is None or link is None:
            raise KmodError(f"{spec.name!r} or its bridge {spec.bridge!r} not found")
        await _protect(ipr, link["index"], br["index"], spec.mac)
        await ipr.link("set", index=link["index"], state="up")


async def delete_vnic(name: str) -> bool:
    """Delete the host end (a veth's guest end goes with it); False when it was already gone."""
    async with _ipr(None) as ipr:
        link = await _get_link(ipr, ifname=name)
        if link is None:
            return False
        if _kind(link) not in ("veth", "tun"):
            raise KmodError(f"{name!r} is a {_kind(link)} device, not a VNIC; not deleting it")
        await _delete_link(ipr, link["index"], f"VNIC {name!r}")
        return True
