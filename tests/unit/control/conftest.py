"""Fixtures for the admin API and CLI tests: a FakeService and a real AdminServer around it.

FakeService implements the duck-typed interface the admin app uses (see
varpd.daemon.service.Varpd): ``ready``, ``started_at``, ``overlays()``, ``get()``,
``create_overlay()``, ``delete_overlay()``, ``reconcile()``.  Its runtimes answer
``describe()`` and ``kernel_entries()`` in the shape of varpd.daemon.overlay.OverlayRuntime.
"""
from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from varpd.admin.runner import AdminServer
from varpd.backend.errors import PluginNotFound, PropertyError
from varpd.config.daemon import OverlayConfig
from varpd.daemon.errors import OverlayExists, OverlayNotFound

# (property, perm, default, possible) as DAEMON_PROPERTIES + a backend's own ones render them
_VXLAN_PROPS = [
    ("vxlan/listen_ip", "rw*", "--", "--"),
    ("vxlan/listen_port", "r-", "4789", "1-65535"),
    ("link/mtu", "r-", "--", "576-9000"),
]
_PLUGIN_PROPS = {
    "files": [("files/config", "rw*", "--", "--")],
    "direct": [("direct/dest_ip", "rw*", "--", "--"), ("direct/dest_port", "rw*", "4789", "1-65535")],
}


class FakeRuntime:
    """An overlay as the admin app sees it: name, status, describe(), kernel_entries()."""

    def __init__(self, cfg: OverlayConfig, *, status: str = "ONLINE", details: str = "",
                 entries: list[dict[str, str]] | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.status = status
        self.details = details
        if cfg.mode == "auto":
            self.mode = "point" if cfg.search == "direct" else "push"
        else:
            self.mode = cfg.mode
        self.entries = entries or []

    def describe(self) -> dict[str, Any]:
        values = {"vxlan/listen_port": 4789, **self.cfg.properties}
        props = [{"property": name, "perm": perm, "value": str(values[name]) if name in values else "--",
                  "default": default, "possible": possible}
                 for name, perm, default, possible in _VXLAN_PROPS + _PLUGIN_PROPS.get(self.cfg.search, [])]
        return {
            "name": self.name, "vni": self.cfg.vni, "encap": self.cfg.encap, "plugin": self.cfg.search,
            "mode": self.mode, "status": self.status, "details": self.details, "bridge": self.cfg.bridge,
            "properties": props,
            "counters": {"lookups": 0, "cache_hits": 0, "cache_negative_hits": 0,
                         "cache_rate_limited": 0, "cache_entries": 0},
        }

    async def kernel_entries(self) -> list[dict[str, str]]:
        return [dict(e) for e in self.entries]


VX23_ENTRIES = [
    {"kind": "fdb", "target": "02:08:20:00:00:02", "destination": "[2001:db8::2]:4789", "origin": "push"},
    {"kind": "fdb", "target": "02:08:20:00:00:03", "destination": "192.0.2.3:4789", "origin": "push"},
    {"kind": "neigh", "target": "10.55.55.2", "destination": "02:08:20:00:00:02", "origin": "push"},
]


class FakeService:
    def __init__(self) -> None:
        self.ready = True
        self.started_at = time.time() - 5.0
        self._overlays: dict[str, FakeRuntime] = {}
        self.created: list[OverlayConfig] = []
        self.deleted: list[str] = []
        self.reconciled: list[str] = []
        self.fail_next: BaseException | None = None  # raised by the next call, then cleared

    def _maybe_fail(self) -> None:
        exc, self.fail_next = self.fail_next, None
        if exc is not None:
            raise exc

    def add(self, rt: FakeRuntime) -> FakeRuntime:
        self._overlays[rt.name] = rt
        return rt

    # -- the interface the admin app uses --------------------------------------------
    def overlays(self) -> list[FakeRuntime]:
        self._maybe_fail()
        return list(self._overlays.values())

    def get(self, name: str) -> FakeRuntime:
        self._maybe_fail()
        try:
            return self._overlays[name]
        except KeyError:
            raise OverlayNotFound(name) from None

    async def create_overlay(self, cfg: OverlayConfig) -> FakeRuntime:
        self._maybe_fail()
        self.created.append(cfg)
        if cfg.name in self._overlays:
            raise OverlayExists(f"overlay {cfg.name!r} already exists")
        for other in self._overlays.values():
            if other.cfg.vni == cfg.vni and other.cfg.encap == cfg.encap:
                raise OverlayExists(f"VNI {cfg.vni} with {cfg.encap} is already used by overlay {other.name!r}")
        if cfg.search == "nope":
            raise PluginNotFound("unknown plugin 'nope' (installed: direct, files)")
        if "files/nope" in cfg.properties:
            raise PropertyError("files/nope", "unknown property")
        return self.add(FakeRuntime(cfg))

    async def delete_overlay(self, name: str) -> None:
        self._maybe_fail()
        self.get(name)
        del self._overlays[name]
        self.deleted.append(name)

    async def reconcile(self, name: str) -> dict[str, int]:
        self._maybe_fail()
        self.get(name)
        self.reconciled.append(name)
        return {"fdb_added": 1, "fdb_removed": 0, "neigh_added": 2, "neigh_removed": 0}


def seeded_service() -> FakeService:
    """vx23: files/push ONLINE with kernel entries (one IPv6 destination); vx42: direct DEGRADED."""
    svc = FakeService()
    svc.add(FakeRuntime(OverlayConfig(name="vx23", vni=23, search="files",
                                      properties={"vxlan/listen_ip": "192.0.2.1",
                                                  "files/config": "/etc/varpd/hosts.json"}),
                        entries=VX23_ENTRIES))
    svc.add(FakeRuntime(OverlayConfig(name="vx42", vni=42, search="direct",
                                      properties={"vxlan/listen_ip": "192.0.2.1",
                                                  "direct/dest_ip": "2001:db8::9"}),
                        status="DEGRADED", details="backend unreachable"))
    return svc


@pytest.fixture
def fake() -> FakeService:
    return seeded_service()


@pytest.fixture
def empty_fake() -> FakeService:
    return FakeService()


@pytest.fixture
def short_dir(tmp_path: Path):
    """tmp_path, or a shorter directory when tmp_path would overflow sun_path (108 bytes)."""
    if len(str(tmp_path / "varpd.sock")) < 100:
        yield tmp_path
        return
    d = tempfile.mkdtemp(prefix="vctl-")
    try:
        yield Path(d)
    finally:
        for f in Path(d).iterdir():
            f.unlink()
        os.rmdir(d)


class ThreadedAdmin:
    """A real AdminServer on a unix socket, served by its own event loop in a thread."""

    def __init__(self, service: Any, socket_path: Path) -> None:
        self.service = service
        self.socket_path = socket_path
        self.server = AdminServer(service, str(socket_path))
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="admin-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:  # surfaced to the test thread
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        assert self._started.wait(10), "admin server did not start"
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._error is None:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def admin(fake: FakeService, short_dir: Path):
    """A running AdminServer around `fake`; yields the ThreadedAdmin (see .socket_path, .service)."""
    srv = ThreadedAdmin(fake, short_dir / "varpd.sock")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
