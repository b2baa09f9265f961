"""VNICs on overlays (dladm create-vnic -l OVERLAY): validated at the edge, saved in
state_dir/vnics/NAME.json, re-created at daemon start (after a reboot the namespace and the
pair are gone) and whenever found gone later (`retry`, with the overlays' retries), and shown with a warning when their MAC is not in the overlay's mapping
(the overlay would never route to it).  The kernel side is varpd_kmod.vnic.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from varpd.config.vnic import VnicConfig
from varpd.daemon.errors import OverlayExists, OverlayNotFound, VarpdError
from varpd.daemon.state import write_atomic
from varpd_kmod import vnic as kvnic

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT = 2.0


class VnicNotFound(OverlayNotFound):
    """Answered 404 like a missing overlay."""

    def __init__(self, name: str) -> None:
        VarpdError.__init__(self, f"vnic {name!r} not found")
        self.name = name


class VnicExists(OverlayExists):
    """Answered 409."""


class OverlayBusy(OverlayExists):
    """delete-overlay of an overlay with VNICs: refused (409), naming them."""


class VnicManager:
    """The daemon's VNICs; `service` is the Varpd owning the overlays."""

    def __init__(self, state_dir: Path, service: Any) -> None:
        self.dir = Path(state_dir) / "vnics"
        self.service = service
        self._vnics: dict[str, VnicConfig] = {}
        self._details: dict[str, str] = {}  # why a saved VNIC could not be re-created
        self._lock = asyncio.Lock()

    # -- state --------------------------------------------------------------------------
    def _load_saved(self) -> list[VnicConfig]:
        found = []
        for path in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []:
            try:
                found.append(VnicConfig.model_validate(json.loads(path.read_text())["vnic"]))
            except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
                log.error("state=%s event=state-unreadable error=%s action=skipped", path, " ".join(str(exc).split()))
        return found

    def _save(self, cfg: VnicConfig) -> None:
        write_atomic(self.dir / f"{cfg.name}.json", {"version": 1, "vnic": cfg.model_dump(mode="json")})

    def on_overlay(self, overlay: str) -> list[str]:
        return sorted(n for n, c in self._vnics.items() if c.overlay == overlay)

    # -- kernel -------------------------------------------------------------------------
    async def _spec(self, cfg: VnicConfig) -> kvnic.VnicSpec:
        rt = self.service.get(cfg.overlay)
        if rt.orphan or not rt.cfg.bridge:
            raise VarpdError(f"overlay {cfg.overlay!r} has no bridge: create it with -b BRIDGE to attach VNICs")
        if rt.cfg.netns is not None:  # its bridge is there; a VNIC's host end is made here
            raise VarpdError(f"overlay {cfg.overlay!r} is in network namespace {rt.cfg.netns}: VNICs are made in the "
                             "daemon's namespace, so they attach only to overlays there")
        mtu = cfg.mtu or await kvnic.link_mtu(cfg.overlay)
        if mtu is None:
            raise VarpdError(f"overlay {cfg.overlay!r} has no VXLAN device yet ({rt.details})")
        return kvnic.VnicSpec(name=cfg.name, mac=cfg.mac, bridge=rt.cfg.bridge, mtu=mtu, kind=cfg.type,
                              netns=cfg.netns, guest_ifname=cfg.guest_ifname,
                              addresses=tuple(str(a) for a in cfg.addresses))

    async def restore(self) -> None:
        """At start, after the overlays: each saved VNIC kept (re-protected) if its host end is
        there, re-created (namespace included) if it is gone; a failure is shown, not fatal."""
        for cfg in self._load_saved():
            self._vnics[cfg.name] = cfg
            try:
                await self._restore_one(cfg)
                self._details.pop(cfg.name, None)
            except Exception as exc:  # noqa: BLE001 - one VNIC must not stop the others
                self._details[cfg.name] = " ".join(str(exc).split())
                log.error("vnic=%s overlay=%s event=restore-failed error=%s", cfg.name, cfg.overlay,
                          self._details[cfg.name])
            await self._warn_unmapped(cfg)

    async def retry(self) -> None:
        """Every retry interval: a VNIC whose host end is not there (its restore failed, its namespace
        was deleted, someone deleted the link) is re-created, like a device deleted behind varpd's
        back; one that still fails says so once per new reason."""
        async with self._lock:
            for name, cfg in list(self._vnics.items()):
                if name not in self._details and kvnic.link_exists(name):
                    continue
                try:
                    await self._restore_one(cfg)
                except Exception as exc:  # noqa: BLE001 - shown as MISSING; the next retry tries again
                    reason = " ".join(str(exc).split())
                    if self._details.get(name) != reason:
                        log.error("vnic=%s overlay=%s event=retry-failed error=%s action=retry", name,
                                  cfg.overlay, reason)
                    self._details[name] = reason
                else:
                    self._details.pop(name, None)

    async def _restore_one(self, cfg: VnicConfig) -> None:
        spec = await self._spec(cfg)
        state = await kvnic.vnic_state(spec)
        if state.exists:
            await kvnic.reprotect_vnic(spec)
            log.info("vnic=%s overlay=%s event=adopted", cfg.name, cfg.overlay)
        else:
            await kvnic.create_vnic(spec)
            log.info("vnic=%s overlay=%s event=re-created netns=%s", cfg.name, cfg.overlay, cfg.netns or "-")

    # -- control operations ---------------------------------------------------------------
    async def create(self, cfg: VnicConfig) -> dict[str, Any]:
        async with self._lock:
            if cfg.name in self._vnics:
                raise VnicExists(f"vnic {cfg.name!r} already exists")
            for other in self._vnics.values():
                if other.overlay == cfg.overlay and other.mac == cfg.mac:
                    raise VnicExists(f"MAC {cfg.mac} is already vnic {other.name!r} on overlay {cfg.overlay!r}")
            spec = await self._spec(cfg)
            await kvnic.create_vnic(spec)
            try:
                self._save(cfg)
            except BaseException:
                await kvnic.delete_vnic(cfg.name)
                raise
            self._vnics[cfg.name] = cfg
        log.info("vnic=%s overlay=%s event=created type=%s mac=%s netns=%s", cfg.name, cfg.overlay, cfg.type,
                 cfg.mac, cfg.netns or "-")
        await self._warn_unmapped(cfg)
        return await self.describe(cfg.name)

    async def delete(self, name: str) -> None:
        async with self._lock:
            cfg = self._get(name)
            await kvnic.delete_vnic(name)
            (self.dir / f"{name}.json").unlink(missing_ok=True)
            self._vnics.pop(name, None)
            self._details.pop(name, None)
        log.info("vnic=%s overlay=%s event=deleted", name, cfg.overlay)

    def _get(self, name: str) -> VnicConfig:
        try:
            return self._vnics[name]
        except KeyError:
            raise VnicNotFound(name) from None

    # -- views ---------------------------------------------------------------------------
    async def _in_mapping(self, cfg: VnicConfig) -> bool | None:
        """Whether the overlay's backend knows the MAC (None: cannot tell now)."""
        try:
            rt = self.service.get(cfg.overlay)
        except OverlayNotFound:
            return None
        if rt.backend is None:
            return None
        try:
            return await asyncio.wait_for(rt.backend.lookup(cfg.mac), LOOKUP_TIMEOUT) is not None
        except Exception:  # noqa: BLE001 - a backend down is the overlay's status, not the VNIC's
            return None

    async def _warn_unmapped(self, cfg: VnicConfig) -> None:
        if await self._in_mapping(cfg) is False:
            log.warning("vnic=%s overlay=%s mac=%s event=mac-not-in-mapping: no host can reach this guest",
                        cfg.name, cfg.overlay, cfg.mac)

    async def describe(self, name: str) -> dict[str, Any]:
        cfg = self._get(name)
        state, detail = None, self._details.get(name)
        try:
            state = await kvnic.vnic_state(await self._spec(cfg))
        except Exception as exc:  # noqa: BLE001 - shown, the other VNICs still answer
            detail = detail or " ".join(str(exc).split())
        if state is None or not state.exists:
            status = "MISSING"
        elif state.bridge is None or not state.protected or not state.up:
            status = "DEGRADED"
            detail = detail or (f"not on the bridge" if state.bridge is None else
                                "port protection missing" if not state.protected else "down")
        else:
            status = "UP"
        mapped = await self._in_mapping(cfg)
        warning = f"MAC {cfg.mac} is not in overlay {cfg.overlay}'s mapping" if mapped is False else None
        mtu = None
        try:
            mtu = await kvnic.link_mtu(name)
        except Exception:  # noqa: BLE001
            pass
        return {**cfg.model_dump(mode="json"), "status": status, "details": detail, "mtu": mtu,
                "in_mapping": mapped, "warning": warning}

    async def list(self) -> list[dict[str, Any]]:
        return [await self.describe(n) for n in sorted(self._vnics)]
