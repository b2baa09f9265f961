"""One overlay at run time: backend + VXLAN device + kernel tables + the loops that keep them equal.

What each mode wants and how it gets there is a strategy of varpd.daemon.modes (push,
on-demand, point); this module owns what they share: the device, the kernel tables, the lock,
the backend's lookups through the cache; varpd.daemon.kernel_sync keeps the kernel equal to what
is wanted (batched programming, the full pass, event-driven drift repair), applying only the
difference, so start, restart and ENOBUFS never flush.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Callable

from varpd.backend import registry
from varpd.backend.base import Backend, DestType, OverlayContext, PluginMode
from varpd.backend.errors import BackendError, PropertyError
from varpd.backend.properties import PropertySpec, format_value, resolve
from varpd.config.daemon import DaemonSettings, OverlayConfig
from varpd.daemon.cache_sweeper import sweeper
from varpd.daemon import flooding
from varpd.daemon.change_log import ChangeLog
from varpd.daemon import placement
from varpd.daemon.guest_frames import GuestFrames
from varpd.daemon.modes import ModeStrategy, strategy_for
from varpd.daemon.overlay_props import DAEMON_PROPERTIES, native_dhcp
from varpd.daemon.programmed import ProgrammedAt
from varpd.daemon.kernel_sync import KernelSync
from varpd.model import Destination, Mapping, MappingChange
from varpd.model.addresses import check_vtep
from varpd.model.cache import MISSING, LookupCache
from varpd.model.latency import LatencyHistogram
from varpd.model.overrides import Override, format_override
from varpd.packet import build_gratuitous_arp, build_unsolicited_na
from varpd.tasks import TaskSet
from varpd_kmod import device as kdev
from varpd_kmod.netlink import KernelTables
from varpd_kmod.types import DeviceHandle, FdbChange, L2Miss, L3Miss, NeighChange, NeighEntry

log = logging.getLogger(__name__)

# what a backend must be able to answer for each encapsulation (libvarpd's destination types)
ENCAP_DEST_TYPES = {"vxlan": DestType.IP | DestType.PORT}


class OverlayRuntime:
    def __init__(self, cfg: OverlayConfig, settings: DaemonSettings,
                 created: tuple[bool, bool] = (False, False),
                 overrides: dict[str, Override] | None = None) -> None:
        self.cfg = cfg
        # entries set by hand (modify-overlay -s): a destination, or None for a drop
        self.overrides: dict[str, Override] = dict(overrides or {})
        self.programmed_at = ProgrammedAt()
        self.lookup_latency = LatencyHistogram()
        self._created_before = created  # (vxlan, bridge) made by an earlier run of varpd
        self.name = cfg.name
        self.settings = settings
        self.status = "INIT"
        self.details = "starting"
        self.counters: collections.Counter[str] = collections.Counter()
        self.backend: Backend | None = None
        self.backend_cls: type[Backend] | None = None
        self.values: dict[str, Any] = {}
        self.specs: tuple[PropertySpec, ...] = DAEMON_PROPERTIES
        self.mode = cfg.mode
        self.handle: DeviceHandle | None = None
        self.tables: KernelTables | None = None
        self.local: Destination | None = None
        self.strategy: ModeStrategy | None = None  # set by validate(), once the mode is known
        self.native = None
        self.flooding: flooding.Flooding | None = None  # vxlan/flood = replicate
        self.cache: LookupCache = LookupCache(settings.cache_ttl, settings.negative_ttl, settings.miss_rate_limit)
        self.origin: dict[Any, str] = {}
        self._lock = asyncio.Lock()
        self._tasks = TaskSet(on_failure=self._task_failed)
        self._change_log = ChangeLog(log, cfg.name)
        self.frames: GuestFrames | None = None
        self.place: placement.Place | None = None  # the namespace and listen address, as last surveyed
        self._server_mac = "02:00:00:00:00:01"
        self.orphan = False  # a device found in the kernel with no overlay configured for it
        self.sync = KernelSync(self)
        self.on_device: Callable[["OverlayRuntime"], None] | None = None  # the service: a new ifindex

    # -- validation (no side effects) -------------------------------------------------
    def validate(self) -> None:
        """Resolve plugin and properties; raises PluginNotFound / PropertyError before touching the kernel."""
        self.backend_cls = registry.load(self.cfg.search)
        needed = ENCAP_DEST_TYPES[self.cfg.encap]
        if needed & self.backend_cls.dest_types != needed:
            raise BackendError(f"plugin {self.cfg.search!r} cannot serve {self.cfg.encap} destinations "
                               f"(needs {needed}, has {self.backend_cls.dest_types})")
        self.specs = DAEMON_PROPERTIES + self.backend_cls.properties
        self.values = resolve(self.specs, self.cfg.properties)
        listen_ip = self.values["vxlan/listen_ip"]
        try:
            check_vtep(listen_ip)
        except ValueError as exc:
            raise PropertyError("vxlan/listen_ip", str(exc)) from None
        self.local = Destination(listen_ip, int(self.values["vxlan/listen_port"]))
        self.native = native_dhcp(self.values)
        point = self.backend_cls.mode is PluginMode.POINT
        if self.cfg.mode == "auto":
            self.mode = "point" if point else ("push" if self.backend_cls.enumerable else "on-demand")
        elif point:
            self.mode = "point"
        elif self.cfg.mode == "push" and not self.backend_cls.enumerable:
            raise PropertyError("mode", f"backend {self.cfg.search} cannot enumerate its mapping: use on-demand")
        else:
            self.mode = self.cfg.mode
        self.flooding = flooding.flooding_for(self.values, self.local, self.mode, self.cfg.bridge)
        self.strategy = strategy_for(self)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self.validate()
        assert self.backend_cls and self.local
        ctx = OverlayContext(self.name, self.cfg.vni, self.local.ip, self.local.port)
        self.backend = self.backend_cls(ctx, self.values)
        await self.backend.start()
        if self.mode == "push":
            self.strategy.load(self.backend.snapshot())
        # no await between the snapshot and the listener: no change can fall in between
        self.backend.add_listener(self._on_change)
        self.backend.add_status_listener(self._on_backend_status)
        self.backend.add_flood_listener(lambda: self._tasks.spawn(flooding.sync(self)))
        await placement.ensure_device(self)
        await self.reconcile(adopt=True)
        self._tasks.spawn(self.sync.loop())
        sweeper().watch(self.cache)  # /metrics and memory follow expiry, one timer for all overlays
        if self.cfg.bridge:
            placement.open_taps(self)
        self.refresh_status()
        log.info("overlay=%s event=started vni=%d mode=%s plugin=%s ifindex=%d",
                 self.name, self.cfg.vni, self.mode, self.cfg.search, self.handle.ifindex)

    async def stop(self, *, delete_device: bool) -> None:
        await self._tasks.cancel_all()
        sweeper().unwatch(self.cache)
        self._change_log.close()
        placement.release(self)
        if self.backend is not None:
            await self.backend.stop()
        if delete_device and self.handle is not None:
            await kdev.delete_overlay(self.handle, self.cfg.netns)
        self.status = "STOPPED"

    def _task_failed(self, exc: BaseException) -> None:
        self.counters["errors"] += 1
        log.error("overlay=%s task failed: %r", self.name, exc, exc_info=exc)

    # -- status -------------------------------------------------------------------------
    def _set_status(self, reason: str | None) -> None:
        new = "DEGRADED" if reason else "ONLINE"
        if new != self.status:
            self.counters[f"status_{new.lower()}"] += 1
            log.log(logging.WARNING if reason else logging.INFO,
                    "overlay=%s event=status status=%s details=%s", self.name, new, reason or "-")
        self.status = new
        self.details = reason or ""

    def refresh_status(self) -> None:
        """DEGRADED while the namespace or the listen address is missing, or while the backend says so."""
        self._set_status((self.place and self.place.problem) or (self.backend and self.backend.degraded))

    def _on_backend_status(self, reason: str | None) -> None:
        self.refresh_status()

    # -- kernel programming (varpd.daemon.kernel_sync) ------------------------------------
    async def _program(self, add_fdb=(), add_neigh=(), del_fdb=(), del_neigh=()) -> None:
        await self.sync.program(add_fdb, add_neigh, del_fdb, del_neigh)

    async def reconcile(self, *, adopt: bool = False) -> dict[str, int]:
        return await self.sync.reconcile(adopt=adopt)

    def on_kernel_change(self, ev: FdbChange | NeighChange) -> None:
        """An FDB/neighbour event of this overlay's device (the daemon's one neighbour socket)."""
        self.sync.on_change(ev)

    async def _announce(self, entries: list[NeighEntry]) -> None:
        """A changed IP → MAC mapping is announced to local guests (gratuitous ARP, unsolicited NA),
        so their caches follow at once instead of after a timeout (svp's VL3 shootdown, any move)."""
        if not entries or self.frames is None:
            return
        for n in entries:
            frame = build_gratuitous_arp(n.mac, n.ip) if n.ip.version == 4 else build_unsolicited_na(n.mac, n.ip)
            await self.frames.send_to_guests(frame)
        self.counters["announcements"] += len(entries)

    # -- mapping changes ---------------------------------------------------------------
    def _on_change(self, change: MappingChange) -> None:
        self.counters["mapping_changes"] += 1
        # the backend's table as this change left it (it may move on before the task runs)
        self._tasks.spawn(self._apply_change(change, self.backend.snapshot()))

    async def _apply_change(self, change: MappingChange, snapshot: Mapping | None = None) -> None:
        async with self._lock:
            await self.strategy.apply_change(change, snapshot)
        await flooding.sync(self)
        self._change_log.add(change)

    # -- the backend's answers, through the cache ----------------------------------------
    async def _lookup_mac(self, mac: str, *, force: bool = False) -> Destination | None:
        return await self._cached_lookup(mac, self.backend.lookup, force)

    async def _lookup_ip(self, ip, *, force: bool = False) -> str | None:
        call = self.backend.arp if ip.version == 4 else self.backend.ndp
        return await self._cached_lookup(ip, call, force)

    async def _cached_lookup(self, key, call, force: bool):
        """The cache's answer, else the backend's (rate-limited per key, timed, counted by result)."""
        cached = MISSING if force else self.cache.get(key)
        if cached is MISSING:
            if not force and not self.cache.allow_lookup(key):
                return None
            t0 = time.perf_counter()
            cached = await call(key)
            self.lookup_latency.observe(time.perf_counter() - t0)
            self.counters["lookups_answered" if cached is not None else "lookups_unknown"] += 1
            self.cache.put(key, cached)
        return cached

    @property
    def answers_inline(self) -> bool:
        """A miss can be answered without waiting on I/O other than the kernel's ACK."""
        return self.backend is not None and self.backend.answers_from_memory

    async def on_miss(self, ev: L2Miss | L3Miss) -> None:
        kind = "l2" if isinstance(ev, L2Miss) else "l3"
        self.counters[f"misses_{kind}"] += 1
        await self.strategy.on_miss(ev)  # push/point: everything known is programmed; the reconciler covers losses

    async def on_events_lost(self) -> None:
        self.sync.events_lost()

    # -- presentation ------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        props = []
        for spec in self.specs:
            value = self.values.get(spec.name)
            props.append({
                "property": spec.name,
                "perm": spec.protection.value,
                "value": spec.show(value),
                "default": "--" if spec.default is None else format_value(spec.parse(spec.default)),
                "possible": spec.possible(),
            })
        counters = dict(self.counters)
        counters.update(cache_hits=self.cache.hits, cache_negative_hits=self.cache.negative_hits,
                        cache_rate_limited=self.cache.rate_limited, cache_entries=len(self.cache))
        return {
            "name": self.name,
            "vni": self.cfg.vni,
            "encap": self.cfg.encap,
            "plugin": self.cfg.search,
            "mode": self.mode,
            "status": self.status,
            "details": self.details,
            "bridge": self.cfg.bridge,
            "flood": flooding.describe(self),
            "netns": self.cfg.netns,
            "properties": props,
            "counters": counters,
        }

    def _pushed(self, mac: str) -> str:
        """push mode keeps no origin per entry (a million dict slots): what it wants it pushed."""
        return "push" if self.mode == "push" and self.strategy.want_fdb(mac) else "other"

    def _age(self, key: Any) -> str:
        at = self.programmed_at.get(key)
        return "--" if at is None else str(int(time.monotonic() - at))

    async def kernel_entries(self) -> list[dict[str, str]]:
        """The kernel's entries as it has them now (and the administrator's drops, which it has not)."""
        if self.tables is None:
            return []
        fdb = sorted(await self.tables.dump_fdb(), key=lambda e: e.mac)
        neigh = sorted(await self.tables.dump_neigh(), key=lambda e: (e.ip.version, e.ip))
        rows = [{"kind": "fdb", "target": e.mac, "destination": str(Destination(e.dst, e.port)),
                 "origin": "manual" if e.mac in self.overrides else self.origin.get(e.mac) or self._pushed(e.mac),
                 "age": self._age(e.mac)} for e in fdb]
        rows += [{"kind": "fdb", "target": mac, "destination": "drop", "origin": "manual", "age": "--"}
                 for mac, dest in sorted(self.overrides.items()) if dest is None]
        rows += [{"kind": "neigh", "target": str(e.ip), "destination": e.mac,
                  "origin": self.origin.get(e.ip) or self.origin.get(e.mac) or self._pushed(e.mac), "age": self._age(e.ip)}
                 for e in neigh]
        return rows

    # -- cache administration (dladm modify-overlay) -------------------------------------
    async def set_entry(self, mac: str, dest: Override) -> dict[str, str]:
        """-s mac=ip:port|drop: a hand-set entry that wins over the backend until deleted or flushed."""
        if dest is not None and dest.ip.version != self.local.ip.version:
            raise PropertyError("destination", f"{dest.ip} is not of the VTEP's family ({self.local.ip})")
        self.overrides[mac] = dest
        self.cache.invalidate(mac)
        await self.reconcile()
        log.info("overlay=%s event=entry-set mac=%s destination=%s", self.name, mac, format_override(dest))
        return {"mac": mac, "destination": format_override(dest)}

    async def delete_entry(self, mac: str) -> None:
        """-d mac: forget what is known of `mac` (hand-set or resolved); it is resolved afresh."""
        self.overrides.pop(mac, None)
        self.cache.invalidate(mac)
        self.strategy.forget(mac)
        await self.reconcile()
        log.info("overlay=%s event=entry-deleted mac=%s", self.name, mac)

    async def flush(self) -> None:
        """-f: forget every hand-set and resolved entry; push mode re-pushes the mapping."""
        self.overrides.clear()
        self.cache.clear()
        self.strategy.clear()
        await self.reconcile()
        log.info("overlay=%s event=flushed", self.name)
