"""Where an overlay's devices live: its network namespace, the listen address there, the underlay's MTU.

The runtime asks here before each reconcile pass and whenever the namespace's addresses change
(the namespace's miss socket reports them). What it learns:

- the namespace is gone (deleted: its devices went with it): the runtime lets go of everything
  it held there (tables, taps) and is DEGRADED until one of that name exists again, where the
  devices are made afresh;
- the listen address is not (or not yet: IPv6 DAD) on an interface there: DEGRADED, since the
  kernel cannot send from it, and ONLINE again as soon as the address is added;
- the interface holding the address is the underlay when `vxlan/underlay_dev` is not set: the
  VXLAN device's MTU is its MTU less the encapsulation (50 bytes over IPv4, 70 over IPv6), what
  the kernel itself gives a device bound to an underlay, instead of a flat 1500.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from varpd.daemon import flooding, layout
from varpd.daemon.errors import PlacementRefused
from varpd.daemon.guest_frames import GuestFrames
from varpd_kmod import device as kdev
from varpd_kmod._netns import netns_identity
from varpd_kmod.types import DeviceHandle, DeviceSpec, IPAddress, KmodError
from varpd_kmod.underlay import VXLAN_HEADROOM, LocalAddress, link_mac, local_address, set_link_mtu

if TYPE_CHECKING:
    from varpd.daemon.overlay import OverlayRuntime

log = logging.getLogger("varpd.daemon.overlay")


def where(netns: str | None) -> str:
    return f"network namespace {netns}" if netns else "the daemon's network namespace"


@dataclass(frozen=True, slots=True)
class Place:
    """What the overlay's namespace has now. `identity`: the namespace's inode (0 for the
    daemon's own), None when it does not exist; `underlay`: the interface holding the listen IP."""

    netns: str | None
    identity: int | None
    underlay: LocalAddress | None
    listen_ip: IPAddress

    @property
    def problem(self) -> str | None:
        """Why the overlay cannot carry traffic here, in one line; None when it can."""
        if self.identity is None:
            return f"{where(self.netns)} does not exist (deleted?): devices are made again when it is back"
        if self.underlay is None:
            return f"vxlan/listen_ip {self.listen_ip} is not an address of any interface in {where(self.netns)}"
        if not self.underlay.usable:
            return (f"vxlan/listen_ip {self.listen_ip} on {self.underlay.ifname} is tentative or failed IPv6 "
                    "duplicate address detection: the kernel does not send from it")
        return None

    def vxlan_mtu(self, values: dict) -> int | None:
        """The MTU to give the VXLAN device, or None to leave it (link/mtu set, an underlay_dev the
        kernel derives it from, or no underlay known)."""
        if values.get("link/mtu") or values.get("vxlan/underlay_dev") or self.underlay is None:
            return None
        return max(576, self.underlay.mtu - VXLAN_HEADROOM[self.listen_ip.version])


async def survey(netns: str | None, listen_ip: IPAddress) -> Place:
    identity = 0 if netns is None else netns_identity(netns)
    underlay = None
    if identity is not None:
        try:
            underlay = await local_address(listen_ip, netns)
        except KmodError:  # deleted between the two looks
            identity = None
    return Place(netns, identity, underlay, listen_ip)


async def refuse_unplaceable(netns: str | None, listen_ip: IPAddress) -> None:
    """create-overlay: refuse (one line) an overlay whose namespace or listen address is missing."""
    place = await survey(netns, listen_ip)
    if place.identity is None:
        raise PlacementRefused(f"network namespace {netns!r} does not exist (create it first: ip netns add {netns})")
    if place.problem is not None:
        raise PlacementRefused(place.problem)


async def ensure_device(rt: OverlayRuntime) -> None:
    """Create or adopt the overlay's devices in its namespace and open its tables (and taps) there."""
    netns = rt.cfg.netns
    if rt.settings.vxlan_layout == "shared":
        await layout.refuse_shared(rt)
    spec = DeviceSpec(name=rt.name, vni=rt.cfg.vni, local_ip=rt.local.ip, port=rt.local.port, bridge=rt.cfg.bridge,
                      underlay_dev=rt.values.get("vxlan/underlay_dev"), mtu=rt.values.get("link/mtu"),
                      **flooding.device_flags(rt.mode == "point", rt.flooding))
    rt.place = await survey(netns, rt.local.ip)
    old = rt.handle
    handle = await kdev.ensure_overlay(spec, netns)
    # keep "who created what" across re-creation and restarts: delete removes what we made
    made_vxlan, made_bridge = rt._created_before
    if old is not None:
        made_vxlan, made_bridge = made_vxlan or old.created_vxlan, made_bridge or old.created_bridge
    rt.handle = DeviceHandle(handle.name, handle.ifindex, handle.vni, handle.bridge, handle.bridge_ifindex,
                             made_vxlan or handle.created_vxlan, made_bridge or handle.created_bridge)
    release(rt)
    rt.tables = flooding.tables_for(rt.handle, rt.flooding, netns)
    if rt.on_device is not None and (old is None or old.ifindex != handle.ifindex):
        rt.on_device(rt)
    await _apply_mtu(rt)
    if rt.cfg.bridge:
        rt._server_mac = await link_mac(rt.cfg.bridge, netns) or rt._server_mac
        if old is not None:  # re-made: the taps of the old devices see nothing any more
            open_taps(rt)


def open_taps(rt: OverlayRuntime) -> None:
    """The bridge's frames the kernel cannot answer (varpd.daemon.guest_frames)."""
    rt.frames = GuestFrames.open(rt)
    rt.frames.task = rt._tasks.spawn(rt.frames.run())


def release(rt: OverlayRuntime) -> None:
    """Let go of what the runtime holds in the namespace (tables, taps): a deleted namespace lives
    on while a socket in it is open, and with it the old devices."""
    if rt.tables is not None:
        rt.tables.close()
        rt.tables = None
    if rt.frames is not None:
        rt.frames.close()
        rt.frames = None


async def _apply_mtu(rt: OverlayRuntime) -> None:
    mtu = rt.place.vxlan_mtu(rt.values)
    if mtu is not None:
        try:
            await set_link_mtu(rt.name, mtu, rt.cfg.netns)
        except KmodError as exc:
            log.error("overlay=%s event=mtu-failed mtu=%d error=%s", rt.name, mtu, exc)


async def check(rt: OverlayRuntime) -> bool:
    """Before a reconcile pass: is the place still there, and the device in it? Re-makes what is
    gone (True: the tables are usable); False while the namespace itself is gone."""
    before = rt.place
    rt.place = await survey(rt.cfg.netns, rt.local.ip)
    if rt.place.identity is None:
        if rt.tables is not None:
            log.warning("overlay=%s event=namespace-gone netns=%s action=wait", rt.name, rt.cfg.netns)
            release(rt)
        rt.refresh_status()
        return False
    if rt.tables is None or before is None or before.identity != rt.place.identity \
            or await kdev.link_index(rt.name, rt.cfg.netns) != rt.handle.ifindex:
        log.warning("overlay=%s event=device-missing action=recreate netns=%s", rt.name, rt.cfg.netns or "-")
        rt.counters["device_recreated"] += 1
        await ensure_device(rt)
    elif before.underlay != rt.place.underlay:
        await _apply_mtu(rt)
    rt.refresh_status()
    return True


async def on_address_change(rt: OverlayRuntime) -> None:
    """An address of the namespace came or went: is the listen address (still) there?"""
    before = rt.place
    rt.place = await survey(rt.cfg.netns, rt.local.ip)
    if before is None or before.underlay != rt.place.underlay:
        log.info("overlay=%s event=listen-address listen_ip=%s interface=%s", rt.name, rt.local.ip,
                 rt.place.underlay.ifname if rt.place.underlay else "-")
        if rt.tables is not None:
            await _apply_mtu(rt)
    rt.refresh_status()
