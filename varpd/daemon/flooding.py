"""Flooding by head-end replication (`vxlan/flood = replicate`): the flood list of one overlay.

The VXLAN device sends broadcast, multicast and unknown unicast once to every destination of
its all-zeros FDB entries, so the list holds each remote VTEP of the overlay once: every
mapping record's ip/port that is not this host, `vxlan/flood_peers` (VTEPs that hold no VNIC:
a hand-made peer, a gateway) and what the backend contributes (`Backend.flood_peers()`, e.g.
EVPN type-3 routes) — never this host, so nothing comes back to its origin.

With flooding the device's `proxy` is off: it would consume every ARP frame sent through it,
replies included, and every NS, answered or not, so neither a flooded request nor a local
guest's reply to a remote requester would cross. The bridge answers instead (`neigh_suppress` on
the VXLAN port): from neighbour entries on the bridge device, for MACs it has a static entry
for behind that port (FloodTables below programs both). What it cannot answer it floods.
Neither L2 misses (an all-zeros entry silences them) nor L3 misses (they come from the proxy)
fire, so on-demand resolution has nothing to act on: `replicate` needs push mode (point mode
sends everything to its one destination already).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from varpd.backend.errors import PropertyError
from varpd.daemon.reconciler import FLOOD_MAC
from varpd.model import Destination
from varpd.model.overrides import parse_destination
from varpd_kmod.netlink import KernelTables
from varpd_kmod.types import DeviceHandle, FdbEntry, NeighEntry, OpFailure

if TYPE_CHECKING:
    from varpd.daemon.overlay import OverlayRuntime

NONE, REPLICATE = "none", "replicate"
FLOOD_CHOICES = (NONE, REPLICATE)
_SEPARATORS = re.compile(r"[,\s]+")


@dataclass(slots=True)
class Flooding:
    """The validated flood settings of one overlay (`peers`: the configured extra VTEPs) and the
    flood list last handed to the kernel, so a mapping change programs only the difference
    without dumping the device's FDB (the periodic reconcile repairs any drift)."""

    local: Destination
    peers: tuple[Destination, ...] = ()
    programmed: set[FdbEntry] = field(default_factory=set, compare=False)

    def flood_list(self, vteps: Iterable[Destination], contributed: Iterable[Destination] = ()) -> list[FdbEntry]:
        """One all-zeros entry per distinct remote VTEP: the destinations of the wanted unicast
        entries (`vteps`, which push mode keeps counted as the mapping changes), the configured
        peers and the backend's; this host's address and the other family are left out."""
        dests = set(vteps)
        dests.update(self.peers)
        dests.update(contributed)
        keep = sorted((d for d in dests if d.ip != self.local.ip and d.ip.version == self.local.ip.version),
                      key=lambda d: (d.ip, d.port))
        return [FdbEntry(FLOOD_MAC, d.ip, d.port) for d in keep]


def flooding_for(values: dict[str, Any], local: Destination, mode: str, bridge: str | None) -> Flooding | None:
    """The overlay's Flooding, or None with `none`; PropertyError names what cannot work."""
    raw_peers = str(values.get("vxlan/flood_peers") or "").strip()
    if values.get("vxlan/flood", NONE) != REPLICATE:
        if raw_peers:
            raise PropertyError("vxlan/flood_peers", "needs vxlan/flood=replicate")
        return None
    if mode != "push":
        raise PropertyError("vxlan/flood", "replicate needs push mode: with all-zeros entries and no proxy the "
                                           "kernel reports no misses to resolve on demand, and point mode sends "
                                           "everything to its one destination already")
    if bridge is None:
        raise PropertyError("vxlan/flood", "replicate needs a bridge: the bridge answers ARP/NDP (neigh_suppress) "
                                           "in place of the device's proxy")
    peers = []
    for text in filter(None, _SEPARATORS.split(raw_peers)):
        try:
            dest = parse_destination(text, local.port)
        except ValueError as exc:
            raise PropertyError("vxlan/flood_peers", str(exc)) from None
        if dest is None:
            raise PropertyError("vxlan/flood_peers", "'drop' is not a VTEP")
        if dest.ip.version != local.ip.version:
            raise PropertyError("vxlan/flood_peers", f"{dest.ip} is not of the VTEP's family ({local.ip})")
        peers.append(dest)
    return Flooding(local, tuple(dict.fromkeys(peers)))


def device_flags(point: bool, flooding: Flooding | None) -> dict[str, bool]:
    """The VXLAN device's flags: proxy and miss reports for dynamic overlays; none for point
    (one all-zeros entry) and flooding ones, whose bridge port answers ARP/NS instead."""
    dynamic = not point and flooding is None
    return {"proxy": dynamic, "l2miss": dynamic, "l3miss": dynamic, "neigh_suppress": flooding is not None}


class FloodTables:
    """KernelTables as a flooding overlay needs them: FDB entries on the VXLAN device, each unicast
    one with a static bridge entry behind the VXLAN port (suppression answers only for MACs it
    finds there), and the neighbour entries on the bridge device, where suppression reads them."""

    def __init__(self, handle: DeviceHandle, netns: str | None = None) -> None:
        self.device = KernelTables(handle.ifindex, netns)
        try:
            self.bridge = KernelTables(handle.bridge_ifindex, netns)
        except BaseException:
            self.device.close()
            raise

    def close(self) -> None:
        self.device.close()
        self.bridge.close()

    @property
    def closed(self) -> bool:
        return self.device.closed

    @property
    def dev_port(self) -> int:
        return self.device.dev_port

    # The entries are streamed, not listed first: KernelTables reads them inside its lock, at
    # send time (drift repair hands a generator of the wanted state for that reason), and a
    # million of them listed twice held the loop for a second. The MACs that need a bridge
    # entry are noted as they pass, and programmed after.
    async def add_fdb(self, entries: Iterable[FdbEntry]) -> list[OpFailure]:
        macs: list[str] = []
        failures = await self.device.add_fdb(_noting_unicast(entries, macs))
        return failures + await self.device.add_port_fdb(macs)

    async def take_fdb(self, entries: Iterable[FdbEntry]) -> list[OpFailure]:
        macs: list[str] = []
        failures = await self.device.take_fdb(_noting_unicast(entries, macs))
        return failures + await self.device.add_port_fdb(macs)

    async def del_fdb(self, entries: Iterable[FdbEntry]) -> list[OpFailure]:
        """The bridge entries first (a sequence is walked twice, anything else listed once)."""
        if not isinstance(entries, (list, tuple)):
            entries = list(entries)
        failures = await self.device.del_port_fdb(e.mac for e in entries if e.mac != FLOOD_MAC)
        return failures + await self.device.del_fdb(entries)

    async def dump_fdb(self) -> dict[FdbEntry, bool]:
        """The device's entries (→ carries varpd's mark); one of varpd's unicast entries whose
        bridge entry is missing is left out, so the reconciler adds both again. A bridge entry
        is removed only with its MAC's device entry (del_fdb): it carries no mark of its own."""
        have, port = await self.device.dump_fdb(), await self.device.dump_port_fdb()
        return {e: owned for e, owned in have.items() if e.mac == FLOOD_MAC or e.mac in port or not owned}

    async def add_neigh(self, entries: Iterable[NeighEntry]) -> list[OpFailure]:
        return await self.bridge.add_neigh(entries)

    async def del_neigh(self, entries: Iterable[NeighEntry]) -> list[OpFailure]:
        return await self.bridge.del_neigh(entries)

    async def dump_neigh(self) -> dict[NeighEntry, bool]:
        return await self.bridge.dump_neigh()


def _noting_unicast(entries: Iterable[FdbEntry], macs: list[str]) -> Iterator[FdbEntry]:
    for e in entries:
        if e.mac != FLOOD_MAC:
            macs.append(e.mac)
        yield e


def tables_for(handle: DeviceHandle, flooding: Flooding | None, netns: str | None = None) -> KernelTables | FloodTables:
    return FloodTables(handle, netns) if flooding is not None else KernelTables(handle.ifindex, netns)


# -- the runtime's side (varpd.daemon.overlay calls these) ------------------------------------
def current(rt: OverlayRuntime) -> list[FdbEntry]:
    """The flood list the overlay wants now (empty without flooding)."""
    if rt.flooding is None or rt.backend is None:
        return []
    rt.origin[FLOOD_MAC] = "flood"  # show-overlay -t
    return rt.flooding.flood_list(rt.strategy.remote_vteps(), rt.backend.flood_peers())


def reconciled(rt: OverlayRuntime) -> list[FdbEntry]:
    """current(), for a reconcile pass that is about to program it."""
    want = current(rt)
    if rt.flooding is not None:
        rt.flooding.programmed = set(want)
    return want


async def sync(rt: OverlayRuntime) -> None:
    """After a mapping change or a backend's new flood peers: append the VTEPs that appeared,
    delete the ones gone."""
    if rt.flooding is None or rt.tables is None:
        return
    async with rt._lock:
        want, have = set(current(rt)), rt.flooding.programmed
        if want != have:
            await rt._program(add_fdb=sorted(want - have, key=str), del_fdb=sorted(have - want, key=str))
            rt.flooding.programmed = want


def last_programmed(rt: OverlayRuntime) -> list[FdbEntry]:
    """What drift repair puts back when an all-zeros entry changes behind varpd's back (point
    mode's one entry is its strategy's; without flooding, no all-zeros entry is wanted)."""
    if rt.flooding is None:
        return list(rt.strategy.want_fdb(FLOOD_MAC))
    return sorted(rt.flooding.programmed, key=str)


def describe(rt: OverlayRuntime) -> list[str] | None:
    """The flood list as the admin API shows it: None without flooding, else "ip:port" per VTEP."""
    return None if rt.flooding is None else [str(Destination(e.dst, e.port)) for e in current(rt)]
