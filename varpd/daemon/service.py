"""The daemon's core: the set of overlays, their persistence, and the one miss listener.

Kernel misses arrive on one netlink socket for the whole namespace and are
routed to the overlay owning the ifindex.  An overlay that cannot start (bad
file, unreachable backend) is kept, shown DEGRADED, and retried, so a daemon
never refuses to serve the overlays that do work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from varpd.config.daemon import DaemonSettings, OverlayConfig
from varpd.daemon.errors import OverlayExists, OverlayNotFound
from varpd.daemon.overlay import OverlayRuntime
from varpd.backend.errors import PropertyError
from varpd.backend.properties import Protection
from varpd.daemon.state import StateStore
from varpd.daemon.vnics import OverlayBusy, VnicManager
from varpd.model.overrides import format_override, parse_destination
from varpd.packet.mac import normalize_mac
from varpd.tasks import TaskSet
from varpd_kmod import device as kdev
from varpd_kmod.misses import MissListener
from varpd_kmod.types import EventsLost, L2Miss, L3Miss

log = logging.getLogger(__name__)


class Varpd:
    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings
        self.store = StateStore(settings.state_dir)
        self.vnics = VnicManager(settings.state_dir, self)
        self._overlays: dict[str, OverlayRuntime] = {}
        self._by_ifindex: dict[int, OverlayRuntime] = {}
        self._pending: dict[str, OverlayConfig] = {}  # could not start yet: retried
        self._listener: MissListener | None = None
        self._tasks = TaskSet()
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
        self._listener = MissListener()
        self._tasks.spawn(self._miss_loop())
        wanted: dict[str, OverlayConfig] = {c.name: c for c in self.store.load_all()}
        wanted.update({c.name: c for c in configured})  # the config file wins over saved state
        for cfg in wanted.values():
            try:
                await self._start_overlay(cfg)
            except Exception as exc:
                log.error("overlay=%s event=start-failed error=%s action=retry", cfg.name, exc)
                self._pending[cfg.name] = cfg
                self._overlays[cfg.name] = _failed_runtime(cfg, self.settings, exc)
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
            handle = await kdev.find_overlay(name)
            if handle is None:
                self.store.delete(name)
                continue
            made_vxlan, made_bridge = self.store.load_created(name)
            rt = OverlayRuntime(OverlayConfig(name=name, vni=handle.vni, search="-", bridge=handle.bridge),
                                self.settings)
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
        if self._listener is not None:
            self._listener.close()

    async def _start_overlay(self, cfg: OverlayConfig) -> OverlayRuntime:
        for other in self._overlays.values():
            if other.name != cfg.name and other.cfg.vni == cfg.vni and other.cfg.encap == cfg.encap:
                raise OverlayExists(f"VNI {cfg.vni} with {cfg.encap} is already used by overlay {other.name!r}")
        rt = OverlayRuntime(cfg, self.settings, created=self.store.load_created(cfg.name),
                            overrides=self._saved_overrides(cfg.name))
        try:
            await rt.start()
        except BaseException:
            await rt.stop(delete_device=bool(rt.handle and rt.handle.created_vxlan))
            raise
        self.store.save_created(cfg.name, rt.handle.created_vxlan, rt.handle.created_bridge)
        self._overlays[cfg.name] = rt
        self._by_ifindex[rt.handle.ifindex] = rt
        self._pending.pop(cfg.name, None)
        return rt

    # -- control operations --------------------------------------------------------------
    async def create_overlay(self, cfg: OverlayConfig) -> OverlayRuntime:
        existing = self._overlays.get(cfg.name)
        if existing is not None and not existing.orphan:
            raise OverlayExists(f"overlay {cfg.name!r} already exists")
        if existing is not None:  # adopt the orphan's device: the new runtime reconciles it
            self._overlays.pop(cfg.name)
        rt = await self._start_overlay(cfg)
        if cfg.persist:
            self.store.save(cfg)
        log.info("overlay=%s event=created", cfg.name)
        return rt

    async def delete_overlay(self, name: str) -> None:
        rt = self.get(name)
        if attached := self.vnics.on_overlay(name):
            raise OverlayBusy(f"overlay {name!r} has VNICs attached: {', '.join(attached)} (delete-vnic them first)")
        await rt.stop(delete_device=True)
        self._overlays.pop(name, None)
        self._pending.pop(name, None)
        self._by_ifindex = {i: r for i, r in self._by_ifindex.items() if r is not rt}
        self.store.delete(name)
        log.info("overlay=%s event=deleted", name)

    async def reconcile(self, name: str) -> dict:
        return await self.get(name).reconcile()

    async def set_properties(self, name: str, changes: dict[str, object]) -> OverlayRuntime:
        """Change writable properties of a live overlay: its runtime restarts, its device and
        kernel entries stay (the new runtime adopts and reconciles), and its state is re-saved.
        If the new settings cannot start, the old ones are restored and the error is raised."""
        old = self.get(name)
        specs = {spec.name: spec for spec in old.specs}
        for prop in changes:
            spec = specs.get(prop)
            if spec is None and old.backend_cls is not None:
                raise PropertyError(prop, "unknown property")
            if spec is not None and spec.protection is Protection.READ:
                raise PropertyError(prop, "read-only: it can only be set when the overlay is created")
        cfg = old.cfg.model_copy(update={"properties": {**old.cfg.properties, **changes}})
        OverlayRuntime(cfg, self.settings).validate()  # types, ranges, plugin: before anything stops
        if name in self._pending:
            self._pending[name] = cfg
            old.cfg = cfg
        else:
            await old.stop(delete_device=False)
            self._overlays.pop(name, None)
            try:
                await self._start_overlay(cfg)
            except Exception:
                log.error("overlay=%s event=property-change-failed action=restore-previous", name)
                await self._start_overlay(old.cfg)
                raise
        if cfg.persist:
            self.store.save(cfg)
        log.info("overlay=%s event=properties-changed %s", name,
                 " ".join(f"{k}={'********' if specs.get(k) and specs[k].secret else v}" for k, v in changes.items()))
        return self.get(name)

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
    async def _miss_loop(self) -> None:
        async for ev in self._listener.events():
            if isinstance(ev, EventsLost):
                for rt in self.overlays():
                    if rt.handle is not None:
                        self._tasks.spawn(rt.on_events_lost())
                continue
            if isinstance(ev, (L2Miss, L3Miss)):
                rt = self._by_ifindex.get(ev.ifindex)
                if rt is None:
                    rt = self._refresh_ifindex(ev.ifindex)
                if rt is None:
                    continue
                if rt.answers_inline:
                    await rt.on_miss(ev)
                else:
                    self._tasks.spawn(rt.on_miss(ev))

    def _refresh_ifindex(self, ifindex: int) -> OverlayRuntime | None:
        """A device re-created by the reconciler has a new ifindex."""
        self._by_ifindex = {rt.handle.ifindex: rt for rt in self.overlays() if rt.handle is not None}
        return self._by_ifindex.get(ifindex)

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.settings.reconcile_interval))
            for name, cfg in list(self._pending.items()):
                try:
                    await self._start_overlay(cfg)
                    log.info("overlay=%s event=recovered", name)
                except Exception as exc:
                    self._overlays[name].details = str(exc)


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
