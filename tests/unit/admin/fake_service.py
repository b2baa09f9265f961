"""A small in-memory stand-in for varpd.daemon.service.Varpd, and a threaded AdminServer around it.

Shared by tests/unit/admin and tests/unit/cli (the latter puts this directory on sys.path).
"""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from varpd.admin.runner import AdminServer
from varpd.backend.errors import BackendError, ConfigError, PluginNotFound, PropertyError
from varpd.config.daemon import OverlayConfig
from varpd.daemon.errors import OverlayExists, OverlayNotFound

PLUGIN_PROPS = {"files": ["files/config"], "direct": ["direct/dest_ip", "direct/dest_port"]}


class FakeOverlay:
    def __init__(self, cfg: OverlayConfig, *, status: str = "ONLINE", details: str = "",
                 entries: list[dict[str, str]] | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.status = status
        self.details = details
        self.entries = entries or []

    def describe(self) -> dict[str, Any]:
        names = ["vxlan/listen_ip", "vxlan/listen_port"] + PLUGIN_PROPS.get(self.cfg.search, [])
        defaults = {"vxlan/listen_port": "4789", "direct/dest_port": "4789"}
        props = [{"property": n, "perm": "rw" if n.startswith("vxlan/listen_ip") else "r-",
                  "value": str(self.cfg.properties.get(n, defaults.get(n, "--"))),
                  "default": defaults.get(n, "--"),
                  "possible": "1-65535" if n.endswith("port") else "--"} for n in names]
        return {"name": self.name, "vni": self.cfg.vni, "encap": self.cfg.encap, "plugin": self.cfg.search,
                "mode": "push" if self.cfg.mode == "auto" else self.cfg.mode, "status": self.status,
                "details": self.details, "bridge": self.cfg.bridge, "properties": props,
                "counters": {"lookups": 3}}

    async def kernel_entries(self) -> list[dict[str, str]]:
        return list(self.entries)


class FakeService:
    """Creating an overlay whose search is `nope` raises PluginNotFound, `badprop` PropertyError,
    `badfile` ConfigError, `down` BackendError, `kmod` a KmodError-like RuntimeError."""

    def __init__(self) -> None:
        self.ready = True
        self.started_at = time.time() - 10
        self._overlays: dict[str, FakeOverlay] = {}
        self.created: list[OverlayConfig] = []

    def add(self, ov: FakeOverlay) -> FakeOverlay:
        self._overlays[ov.name] = ov
        return ov

    def overlays(self) -> list[FakeOverlay]:
        return list(self._overlays.values())

    def get(self, name: str) -> FakeOverlay:
        if name not in self._overlays:
            raise OverlayNotFound(name)
        return self._overlays[name]

    async def create_overlay(self, cfg: OverlayConfig) -> FakeOverlay:
        self.created.append(cfg)
        if cfg.name in self._overlays:
            raise OverlayExists(f"overlay {cfg.name!r} already exists")
        failures = {"nope": PluginNotFound("no backend 'nope' is installed"),
                    "badprop": PropertyError("badprop/x", "unknown property"),
                    "badfile": ConfigError("/etc/varpd/hosts.json: line 3: 'ip' is required"),
                    "down": BackendError("etcd at 192.0.2.9:2379 unreachable"),
                    "kmod": RuntimeError("netlink: RTM_NEWLINK failed:\nFile exists")}
        if cfg.search in failures:
            raise failures[cfg.search]
        return self.add(FakeOverlay(cfg))

    async def delete_overlay(self, name: str) -> None:
        self.get(name)
        del self._overlays[name]

    async def reconcile(self, name: str) -> dict[str, int]:
        self.get(name)
        return {"added": 2, "removed": 1}


def seeded() -> FakeService:
    svc = FakeService()
    svc.add(FakeOverlay(
        OverlayConfig(name="vx23", vni=23, search="files",
                      properties={"vxlan/listen_ip": "192.0.2.1", "files/config": "/etc/varpd/hosts.json"}),
        entries=[{"kind": "fdb", "target": "02:00:00:00:00:02", "destination": "192.0.2.2:4789", "origin": "push", "age": "12"},
                 {"kind": "neigh", "target": "10.0.0.2", "destination": "02:00:00:00:00:02",
                  "origin": "on-demand", "age": "3"}]))
    svc.add(FakeOverlay(
        OverlayConfig(name="vx42", vni=42, search="direct", mode="on-demand",
                      properties={"vxlan/listen_ip": "2001:db8::1", "direct/dest_ip": "2001:db8::9"}),
        status="DEGRADED", details="no route to 2001:db8::9"))
    return svc


class ThreadedAdminServer:
    """A real AdminServer on a unix socket, run by its own event loop in a background thread,
    so the CLI under test can call asyncio.run() itself."""

    def __init__(self, service: FakeService, socket_path: Path) -> None:
        self.service = service
        self.socket_path = socket_path
        self._server = AdminServer(service, str(socket_path))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedAdminServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
