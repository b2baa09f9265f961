"""The daemon's core: the set of overlays, their persistence, and the kernel event listeners.

Kernel misses, the FDB/neighbour changes of varpd's devices (drift repair) and address
changes arrive on one netlink socket per network namespace that holds an overlay
(varpd.daemon.namespaces) and are routed to the overlay owning the (namespace, ifindex), or
to every overlay of the namespace.  An overlay that cannot start (bad
file, unreachable backend) is kept, shown DEGRADED, and retried, so a daemon
never refuses to serve the overlays that do work.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from varpd.config.daemon import DaemonSettings, OverlayConfig
from varpd.daemon.errors import OverlayExists, OverlayNotFound, StateError
from varpd.daemon import placement
from varpd.daemon.kept_bridges import KeptBridges
from varpd.daemon.namespaces import CHECK_INTERVAL, NamespaceListeners
from varpd.daemon.overlay import OverlayRuntime
from varpd.backend.errors import PropertyError
from varpd.backend.properties import PropertySpec, Protection
from varpd.daemon.state import StateStore
from varpd.daemon.vnics import OverlayBusy, VnicManager
from varpd.model.overrides import format_override, parse_destination
from varpd.packet.mac import normalize_mac
from varpd.tasks import TaskSet
from varpd_kmod import device as kdev
from varpd_kmod.misses import Event
from varpd_kmod.types import AddressChange, EventsLost, FdbChange, KmodError, L2Miss, L3Miss, NeighChange

log = logging.getLogger(__name__)


class Varpd:
    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings
        self.store = StateStore(settings.state_dir)
        self.vnics = VnicManager(settings.state_dir, self)
        self._overlays: dict[str, OverlayRuntime] = {}
        self._by_ifindex: dict[tuple[str | None, int], OverlayRuntime] = {}  # (netns, ifindex)
        self._starting: set[OverlayRuntime] = set()  # in rt.start(): not registered yet
        self._pending: dict[str, OverlayConfig] = {}  # could not start yet: retried
        self._kept = KeptBridges(self.store)
        self._changing = asyncio.Lock()  # one change of the set of overlays at a time
        self._namespaces = NamespaceListeners(self._on_kernel_event, settings.event_buffer)
        self._tasks = TaskSet(on_failure=lambda exc: log.error("event=task-failed error=%r", exc, exc_info=exc))
        self.ready = False
        self.started_at = time.time()

    # -- queries ---------------------------------------------------------------------
    def overlays(self) -> list[OverlayRuntime]:
        return list(self._overlays.values())

    def get(self, name: str) -> OverlayRuntime:
        try:
            return self._overlays[name]
        except KeyError:
            raise OverlayNotFound(name) from None

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, configured: tuple[OverlayConfig, ...]) -> None:
        wanted: dict[str, OverlayConfig] = {c.name: c for c in self.store.load_all()}
        wanted.update({c.name: c for c in configured})  # the config file wins over saved state
        # listening before any device exists: no miss or address change of theirs is missed
        self._check_namespaces({c.netns for c in wanted.values()})
        self._tasks.spawn(self._namespace_loop())
        async with self._changing:
            for cfg in wanted.values():
                await self._restart_or_retry(cfg)
        await self._find_orphans(set(wanted))
        self._tasks.spawn(self._retry_loop())
        await self.vnics.restore()  # after the overlays: their bridges exist
        self.ready = True
        log.info("event=ready overlays=%d", len(self._overlays))

    async def _find_orphans(self, wanted: set[str]) -> None:
        """Devices varpd made for overlays it no longer has (config edited, state lost): shown
        DEGRADED, never silently deleted; delete-overlay removes them, create-overlay adopts them."""
        for name in self.store.known_devices():
            if name in wanted:
                continue
            if self._kept.load(name):  # deleted, but its bridge still had ports: removed once unused
                continue
            netns = self.store.load_netns(name)
            try:
                handle = await kdev.find_overlay(name, netns)
            except KmodError:  # its namespace is gone, and the devices with it
                handle = None
            if handle is None:
                self.store.delete(name)
                continue
            made_vxlan, made_bridge = self.store.load_created(name)
            rt = OverlayRuntime(OverlayConfig(name=name, vni=handle.vni, search="-", bridge=handle.bridge,
                                              netns=netns), self.settings)
            rt.handle = dataclasses.replace(handle, created_vxlan=made_vxlan, created_bridge=made_bridge)
            rt.orphan = True
            rt.mode = "-"
            rt.status = "DEGRADED"
            rt.details = (f"no varpd instance exists for device {name} (VNI {handle.vni}) found in the kernel: "
                          "delete-overlay removes it, create-overlay adopts it")
            rt.counters["status_degraded"] += 1
            self._overlays[name] = rt
            log.warning("overlay=%s event=orphan-device vni=%d status=DEGRADED", name, handle.vni)

    async def stop(self) -> None:
        """SIGTERM: stop serving but leave devices and entries in the kernel, so traffic flows on."""
        await self._tasks.cancel_all()
        for rt in self.overlays():
            await rt.stop(delete_device=False)
        await self._namespaces.close()

    async def _start_overlay(self, cfg: OverlayConfig, *, save: bool = False) -> OverlayRuntime:
        """Start and register a runtime (and save `cfg` if `save`), or, on any failure, stop it and
        remove what this call created: devices that did not exist before, its state files."""
        for other in self._overlays.values():
            if (other.name != cfg.name and other.cfg.vni == cfg.vni and other.cfg.encap == cfg.encap
                    and other.cfg.netns == cfg.netns):  # other namespaces are other underlays
                raise OverlayExists(f"VNI {cfg.vni} with {cfg.encap} is already used by overlay {other.name!r}"
                                    + (f" in {placement.where(cfg.netns)}" if cfg.netns else ""))
        existed = await _existing(cfg)
        rt = OverlayRuntime(cfg, self.settings, created=self.store.load_created(cfg.name),
                            overrides=self._saved_overrides(cfg.name))
        rt.on_device = lambda _rt: self._index()  # a device re-created by the reconciler: a new ifindex
        self._starting.add(rt)  # events lost while it starts concern it too
        try:
            await rt.start()
            self.store.save_created(cfg.name, rt.handle.created_vxlan, rt.handle.created_bridge, cfg.netns)
            if save:
                self.store.save(cfg)
        except BaseException:
            self._starting.discard(rt)
            await _roll_back(rt, existed)
            if existed == (False, False):
                with contextlib.suppress(StateError):
                    self.store.forget_devices(cfg.name)  # nothing of it is left in the kernel
            raise
        self._starting.discard(rt)
        self._overlays[cfg.name] = rt
        self._index()
        self._pending.pop(cfg.name, None)
        self._kept.adopted(cfg.name)
        return rt

    # -- control operations --------------------------------------------------------------
    async def create_overlay(self, cfg: OverlayConfig) -> OverlayRuntime:
        """Exactly one of concurrent creates of a name wins; the others get OverlayExists (409)."""
        async with self._changing:
            existing = self._overlays.get(cfg.name)
            if existing is not None and not existing.orphan:
                raise OverlayExists(f"overlay {cfg.name!r} already exists")
            probe = OverlayRuntime(cfg, self.settings)
            probe.validate()
            if cfg.persist:
                refuse_literal_secrets(cfg.properties, probe.specs)
            await placement.refuse_unplaceable(cfg.netns, probe.local.ip)
            self._check_namespaces({cfg.netns})  # listening there before its device exists
            if existing is not None:  # adopt the orphan's device: the new runtime reconciles it
                self._overlays.pop(cfg.name)
            try:
                rt = await self._start_overlay(cfg, save=cfg.persist)
            except BaseException:
                if existing is not None:
                    self._overlays[cfg.name] = existing
                raise
            log.info("overlay=%s event=created", cfg.name)
            return rt

    async def delete_overlay(self, name: str, *, force_bridge: bool = False) -> list[dict[str, str]]:
        """Stop the overlay and remove the devices varpd made.  A bridge varpd made that still has
        ports is kept (unless `force_bridge`: the kernel detaches them) and stays varpd's: saved,
        and removed by the retry loop once its last port is gone.  Returns what was kept, and why."""
        async with self._changing:
            rt = self.get(name)
            if attached := self.vnics.on_overlay(name):
                raise OverlayBusy(f"overlay {name!r} has VNICs attached: {', '.join(attached)} "
                                  "(delete-vnic them first)")
            self.store.delete(name)  # first: if the state cannot be changed, nothing is
            await rt.stop(delete_device=False)
            netns = rt.cfg.netns
            gone = self._namespaces.identity(netns) is None  # its devices went with the namespace
            ports = [] if rt.handle is None or gone else await kdev.delete_overlay(rt.handle, netns, force=force_bridge)
            self._overlays.pop(name, None)
            self._pending.pop(name, None)
            self._index()
            self._check_namespaces()
            kept = [self._kept.keep(name, rt.handle.bridge, ports, netns)] if ports else []
            log.info("overlay=%s event=deleted", name)
            return kept

    async def reconcile(self, name: str) -> dict:
        return await self.get(name).reconcile()

    async def set_properties(self, name: str, changes: dict[str, object]) -> OverlayRuntime:
        """Change writable properties of a live overlay: its runtime restarts, its device and
        kernel entries stay (the new runtime adopts and reconciles), and its state is re-saved.
        If the new settings cannot start, the old ones are restored and the error is raised."""
        async with self._changing:
            return await self._set_properties(name, changes)

    async def _set_properties(self, name: str, changes: dict[str, object]) -> OverlayRuntime:
        old = self.get(name)
        specs = {spec.name: spec for spec in old.specs}
        for prop in changes:
            spec = specs.get(prop)
            if spec is None and old.backend_cls is not None:
                raise PropertyError(prop, "unknown property")
            if spec is not None and spec.protection is Protection.READ:
                raise PropertyError(prop, "read-only: it can only be set when the overlay is created")
        cfg = old.cfg.model_copy(update={"properties": {**old.cfg.properties, **changes}})
        probe = OverlayRuntime(cfg, self.settings)
        probe.validate()  # types, ranges, plugin: before anything stops
        if cfg.persist:
            refuse_literal_secrets(changes, probe.specs)
        if "vxlan/listen_ip" in changes:
            await placement.refuse_unplaceable(cfg.netns, probe.local.ip)
        if name in self._pending:
            if cfg.persist:
                self.store.save(cfg)
            self._pending[name] = cfg
            old.cfg = cfg
        else:
            await old.stop(delete_device=False)
            self._overlays.pop(name, None)
            try:
                await self._start_overlay(cfg, save=cfg.persist)
            except Exception:
                log.error("overlay=%s event=property-change-failed action=restore-previous", name)
                await self._restart_or_retry(old.cfg)
                raise
        log.info("overlay=%s event=properties-changed %s", name,
                 " ".join(f"{k}={'********' if specs.get(k) and specs[k].secret else v}" for k, v in changes.items()))
        return self.get(name)

    async def _restart_or_retry(self, cfg: OverlayConfig) -> None:
        """Start `cfg` again; if even that fails, it is kept DEGRADED and retried, never dropped."""
        try:
            await self._start_overlay(cfg)
        except Exception as exc:
            log.error("overlay=%s event=start-failed error=%s action=retry", cfg.name, exc)
            self._pending[cfg.name] = cfg
            self._overlays[cfg.name] = _failed_runtime(cfg, self.settings, exc)

    # -- cache administration (modify-overlay) ----------------------------------------------
    async def set_entry(self, name: str, mac: str, destination: str) -> dict[str, str]:
        rt = self.get(name)
        try:
            dest = parse_destination(destination, rt.local.port if rt.local else 4789)
        except ValueError as exc:
            raise PropertyError("destination", str(exc)) from None
        answer = await rt.set_entry(_mac(mac), dest)
        self._save_overrides(rt)
        return answer

    async def delete_entry(self, name: str, mac: str) -> None:
        rt = self.get(name)
        await rt.delete_entry(_mac(mac))
        self._save_overrides(rt)

    async def flush(self, name: str) -> None:
        rt = self.get(name)
        await rt.flush()
        self._save_overrides(rt)

    def _save_overrides(self, rt: OverlayRuntime) -> None:
        self.store.save_overrides(rt.name, {mac: format_override(d) for mac, d in rt.overrides.items()})

    def _saved_overrides(self, name: str) -> dict:
        out = {}
        for mac, text in self.store.load_overrides(name).items():
            try:
                out[normalize_mac(mac)] = parse_destination(text)
            except ValueError as exc:
                log.error("overlay=%s event=override-unreadable mac=%s error=%s action=skipped", name, mac, exc)
        return out

    # -- background loops ----------------------------------------------------------------
    def _in_use(self) -> set[str | None]:
        """The namespaces to listen in: the daemon's own, and each one an overlay is (to be) in."""
        return {None} | {rt.cfg.netns for rt in self._overlays.values()}

    def _overlays_in(self, netns: str | None) -> list[OverlayRuntime]:
        """The started overlays of `netns` (not orphans, not the ones waiting for a retry)."""
        return [rt for rt in self._overlays.values()
                if rt.cfg.netns == netns and rt.handle is not None and rt.local is not None and not rt.orphan]

    def _check_namespaces(self, extra: set[str | None] = frozenset()) -> None:
        """Listen in the namespaces in use (and `extra`); one deleted or made again (or first seen) is
        acted on at once: its overlays reconcile (DEGRADED, or their devices made anew) and the ones
        waiting to start are retried."""
        for netns in self._namespaces.sync(self._in_use() | extra):
            for rt in self._overlays_in(netns):
                self._tasks.spawn(rt.reconcile())
            if any(cfg.netns == netns for cfg in self._pending.values()):
                self._tasks.spawn(self._retry_now())

    async def _namespace_loop(self) -> None:
        while True:
            await self._namespaces.elsewhere.wait()
            await asyncio.sleep(CHECK_INTERVAL)
            self._check_namespaces()

    async def _on_kernel_event(self, netns: str | None, ev: Event) -> None:
        if isinstance(ev, (L2Miss, L3Miss)):
            rt = self._by_ifindex.get((netns, ev.ifindex)) or self._refresh_ifindex(netns, ev.ifindex)
            if rt is None:
                return
            if rt.answers_inline:
                await rt.on_miss(ev)
            else:
                self._tasks.spawn(rt.on_miss(ev))
        elif isinstance(ev, (FdbChange, NeighChange)):
            rt = self._by_ifindex.get((netns, ev.ifindex))
            if rt is not None:
                rt.on_kernel_change(ev)
        elif isinstance(ev, AddressChange):
            for rt in self._overlays_in(netns):
                if ev.ip is None or ev.ip == rt.local.ip:
                    self._tasks.spawn(placement.on_address_change(rt))
        elif isinstance(ev, EventsLost):  # each overlay's full pass, coalesced (KernelSync.resync)
            for rt in self._overlays_in(netns):
                await rt.on_events_lost()
                self._tasks.spawn(placement.on_address_change(rt))
            for rt in [r for r in self._starting if r.cfg.netns == netns and r.handle is not None]:
                await rt.on_events_lost()  # its first pass may predate what was lost

    def _refresh_ifindex(self, netns: str | None, ifindex: int) -> OverlayRuntime | None:
        """A device re-created by the reconciler has a new ifindex."""
        self._index()
        return self._by_ifindex.get((netns, ifindex))

    async def _retry_now(self) -> None:
        async with self._changing:
            await self._retry_pending()

    def _index(self) -> None:
        """(netns, ifindex) → overlay, and the devices whose entry changes each namespace's listener reports."""
        by = {(rt.cfg.netns, rt.handle.ifindex): rt for rt in self.overlays() if rt.handle is not None}
        # a flooding overlay keeps its neighbour entries on its bridge (varpd.daemon.flooding)
        by.update({(rt.cfg.netns, rt.handle.bridge_ifindex): rt for rt in self.overlays()
                   if rt.handle is not None and rt.flooding is not None and rt.handle.bridge_ifindex})
        self._by_ifindex = by
        watch: dict[str | None, set[int]] = {}
        for netns, ifindex in by:
            watch.setdefault(netns, set()).add(ifindex)
        self._namespaces.set_entry_watch(watch)

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(retry_interval(self.settings))
            await self._retry_now()

    async def _retry_pending(self) -> None:
        for name, cfg in list(self._pending.items()):
            try:
                await self._start_overlay(cfg)
                log.info("overlay=%s event=recovered", name)
            except Exception as exc:
                if self._overlays[name].details != str(exc):  # once per new reason, not once a second
                    log.error("overlay=%s event=retry-failed error=%s action=retry", name, exc)
                self._overlays[name].details = str(exc)
        try:
            await self._kept.sweep()
        except Exception as exc:  # netlink or state trouble: the next pass tries again
            log.error("event=bridge-removal-failed error=%s action=retry", exc)
        await self.vnics.retry()


def retry_interval(settings: DaemonSettings) -> float:
    """Overlays that could not start are retried every reconcile_interval, but at least every 30 s
    (the old default) now that the full pass runs every few minutes: a retry costs nothing."""
    return max(1.0, min(settings.reconcile_interval, 30.0))


def _mac(text: str) -> str:
    try:
        return normalize_mac(text)
    except ValueError as exc:
        raise PropertyError("mac", str(exc)) from None


def _failed_runtime(cfg: OverlayConfig, settings: DaemonSettings, exc: Exception) -> OverlayRuntime:
    rt = OverlayRuntime(cfg, settings)
    rt.status = "DEGRADED"
    rt.details = str(exc)
    return rt


async def _existing(cfg: OverlayConfig) -> tuple[bool, bool]:
    """(the VXLAN device exists, the bridge exists) before a start: what a rollback must leave."""
    vxlan = await kdev.link_index(cfg.name, cfg.netns) is not None
    bridge = cfg.bridge is not None and await kdev.link_index(cfg.bridge, cfg.netns) is not None
    return vxlan, bridge


async def _roll_back(rt: OverlayRuntime, existed: tuple[bool, bool]) -> None:
    """Stop `rt` and delete the devices that did not exist before it started (nothing else)."""
    await rt.stop(delete_device=False)
    if rt.handle is None or existed[0]:
        return
    handle = dataclasses.replace(rt.handle, created_bridge=rt.handle.created_bridge and not existed[1])
    try:
        await kdev.delete_overlay(handle, rt.cfg.netns)
    except Exception as exc:  # the original error is the one to report
        log.error("overlay=%s event=rollback-failed error=%s", rt.name, exc)


def refuse_literal_secrets(given: dict[str, object], specs: tuple[PropertySpec, ...]) -> None:
    """A secret property that has a `<name>_file` alternative is never written to the state
    directory: the operator is told to use the file (or -t, an overlay that is not saved)."""
    names = {spec.name for spec in specs}
    for spec in specs:
        if spec.secret and given.get(spec.name) not in (None, "") and f"{spec.name}_file" in names:
            raise PropertyError(spec.name, f"a literal secret is not saved in the state directory: put it in a "
                                           f"file only varpd can read and give {spec.name}_file, or create the "
                                           "overlay with -t (not saved)")
