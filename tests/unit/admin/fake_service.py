"""A small in-memory stand-in for varpd.daemon.service.Varpd, a threaded AdminServer around it,
and the fixtures built on them.

Shared by tests/unit/admin and tests/unit/cli (the latter puts this directory on sys.path); both
conftest.py files import the fixtures from here, so there is one fake and one fixture set.

FakeService implements the duck-typed interface the admin app uses: ``ready``, ``started_at``,
``overlays()``, ``get()``, ``create_overlay()``, ``delete_overlay()``, ``reconcile()``,
``set_properties()``, ``set_entry()``.  Its
overlays answer ``describe()`` and ``kernel_entries()`` in the shape of
varpd.daemon.overlay.OverlayRuntime.
"""
from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from varpd.admin.runner import AdminServer
from varpd.backend.errors import BackendError, ConfigError, PluginNotFound, PropertyError
from varpd.config.daemon import OverlayConfig
from varpd.daemon.errors import OverlayExists, OverlayNotFound
from varpd.model.latency import LatencyHistogram
from varpd.model.overrides import parse_destination
from varpd.packet.mac import normalize_mac

# (property, perm, default, possible) as DAEMON_PROPERTIES + a backend's own ones render them
VXLAN_PROPS = [
    ("vxlan/listen_ip", "rw*", "--", "--"),
    ("vxlan/listen_port", "r-", "4789", "1-65535"),
    ("link/mtu", "r-", "--", "576-9000"),
]
PLUGIN_PROPS = {
    "files": [("files/config", "rw*", "--", "--")],
    "direct": [("direct/dest_ip", "rw*", "--", "--"), ("direct/dest_port", "rw*", "4789", "1-65535")],
}


class FakeOverlay:
    """An overlay as the admin app sees it: name, status, describe(), kernel_entries(), lookup_latency."""

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
        self.lookup_latency = LatencyHistogram()

    def describe(self) -> dict[str, Any]:
        values = {"vxlan/listen_port": 4789, **self.cfg.properties}
        props = [{"property": name, "perm": perm, "value": str(values[name]) if name in values else "--",
                  "default": default, "possible": possible}
                 for name, perm, default, possible in VXLAN_PROPS + PLUGIN_PROPS.get(self.cfg.search, [])]
        return {
            "name": self.name, "vni": self.cfg.vni, "encap": self.cfg.encap, "plugin": self.cfg.search,
            "mode": self.mode, "status": self.status, "details": self.details, "bridge": self.cfg.bridge,
            "netns": self.cfg.netns, "properties": props,
            "counters": {"lookups": 0, "cache_hits": 0, "cache_negative_hits": 0,
                         "cache_rate_limited": 0, "cache_entries": 0},
        }

    async def kernel_entries(self) -> list[dict[str, str]]:
        return [dict(e) for e in self.entries]


class FakeVnics:
    """The daemon's VnicManager as the admin app sees it: create/delete/describe/list, in memory.
    A MAC ending in :99 is "not in the mapping" (shown with a warning)."""

    def __init__(self, service: "FakeService") -> None:
        self.service = service
        self._vnics: dict[str, Any] = {}

    async def create(self, cfg: Any) -> dict[str, Any]:
        self.service.get(cfg.overlay)
        if cfg.name in self._vnics:
            raise OverlayExists(f"vnic {cfg.name!r} already exists")
        self._vnics[cfg.name] = cfg
        return await self.describe(cfg.name)

    async def delete(self, name: str) -> None:
        await self.describe(name)
        del self._vnics[name]

    async def describe(self, name: str) -> dict[str, Any]:
        from varpd.daemon.vnics import VnicNotFound

        if name not in self._vnics:
            raise VnicNotFound(name)
        cfg = self._vnics[name]
        unmapped = cfg.mac.endswith(":99")
        return {**cfg.model_dump(mode="json"), "status": "UP", "details": None, "mtu": 1450,
                "in_mapping": not unmapped,
                "warning": f"MAC {cfg.mac} is not in overlay {cfg.overlay}'s mapping" if unmapped else None}

    async def list(self) -> list[dict[str, Any]]:
        return [await self.describe(n) for n in sorted(self._vnics)]


class FakeService:
    """Records what it was asked to do (created, deleted, reconciled).

    Creating an overlay fails like the daemon does: an existing name or an (encap, VNI) in use
    raises OverlayExists; search `nope` PluginNotFound; a `files/nope` property PropertyError;
    search `badfile` ConfigError, `down` BackendError, `kmod` a KmodError-like multi-line
    RuntimeError.  `fail_next` is raised by the next call of any method, then cleared.
    """

    def __init__(self) -> None:
        self.ready = True
        self.started_at = time.time() - 10
        self._overlays: dict[str, FakeOverlay] = {}
        self.created: list[OverlayConfig] = []
        self.deleted: list[str] = []
        self.reconciled: list[str] = []
        self.fail_next: BaseException | None = None
        self.vnics = FakeVnics(self)
        self.kept_on_delete: list[dict[str, str]] = []  # what delete_overlay answers it kept
        self.force_bridge: list[bool] = []

    def _maybe_fail(self) -> None:
        exc, self.fail_next = self.fail_next, None
        if exc is not None:
            raise exc

    def add(self, ov: FakeOverlay) -> FakeOverlay:
        self._overlays[ov.name] = ov
        return ov

    # -- the interface the admin app uses --------------------------------------------
    def overlays(self) -> list[FakeOverlay]:
        self._maybe_fail()
        return list(self._overlays.values())

    def get(self, name: str) -> FakeOverlay:
        self._maybe_fail()
        try:
            return self._overlays[name]
        except KeyError:
            raise OverlayNotFound(name) from None

    async def create_overlay(self, cfg: OverlayConfig) -> FakeOverlay:
        self._maybe_fail()
        self.created.append(cfg)
        if cfg.name in self._overlays:
            raise OverlayExists(f"overlay {cfg.name!r} already exists")
        for other in self._overlays.values():
            if other.cfg.vni == cfg.vni and other.cfg.encap == cfg.encap:
                raise OverlayExists(f"VNI {cfg.vni} with {cfg.encap} is already used by overlay {other.name!r}")
        failures = {"nope": PluginNotFound("unknown plugin 'nope' (installed: direct, files)"),
                    "badfile": ConfigError("/etc/varpd/hosts.json: line 3: 'ip' is required"),
                    "down": BackendError("etcd at 192.0.2.9:2379 unreachable"),
                    "kmod": RuntimeError("netlink: RTM_NEWLINK failed:\nFile exists")}
        if cfg.search in failures:
            raise failures[cfg.search]
        if "files/nope" in cfg.properties:
            raise PropertyError("files/nope", "unknown property")
        return self.add(FakeOverlay(cfg))

    async def delete_overlay(self, name: str, *, force_bridge: bool = False) -> list[dict[str, str]]:
        self._maybe_fail()
        self.get(name)
        del self._overlays[name]
        self.deleted.append(name)
        self.force_bridge.append(force_bridge)
        return self.kept_on_delete

    async def reconcile(self, name: str) -> dict[str, int]:
        self._maybe_fail()
        self.get(name)
        self.reconciled.append(name)
        return {"fdb_added": 1, "fdb_removed": 0, "neigh_added": 2, "neigh_removed": 0}

    async def set_properties(self, name: str, changes: dict[str, object]) -> FakeOverlay:
        """Like the daemon: the merged properties validated as a whole config, then applied."""
        self._maybe_fail()
        ov = self.get(name)
        ov.cfg = OverlayConfig.model_validate({**ov.cfg.model_dump(), "properties": {**ov.cfg.properties, **changes}})
        return ov

    async def set_entry(self, name: str, mac: str, destination: str) -> dict[str, str]:
        """Like the daemon: the MAC and the destination parsed by the same functions."""
        self._maybe_fail()
        self.get(name)
        try:
            mac = normalize_mac(mac)
        except ValueError as exc:
            raise PropertyError("mac", str(exc)) from None
        try:
            parse_destination(destination)
        except ValueError as exc:
            raise PropertyError("destination", str(exc)) from None
        return {"mac": mac, "destination": destination.strip()}


VX23_ENTRIES = [
    {"kind": "fdb", "target": "02:08:20:00:00:02", "destination": "[2001:db8::2]:4789", "origin": "push"},
    {"kind": "fdb", "target": "02:08:20:00:00:03", "destination": "192.0.2.3:4789", "origin": "push",
     "age": "12"},
    {"kind": "neigh", "target": "10.55.55.2", "destination": "02:08:20:00:00:02", "origin": "on-demand",
     "age": "3"},
]


def seeded() -> FakeService:
    """vx23: files, auto (push), ONLINE, with kernel entries (one IPv6 destination, some with an age);
    vx42: direct, auto (point), DEGRADED, in namespace tn1, no kernel entries."""
    svc = FakeService()
    svc.add(FakeOverlay(OverlayConfig(name="vx23", vni=23, search="files",
                                      properties={"vxlan/listen_ip": "192.0.2.1",
                                                  "files/config": "/etc/varpd/hosts.json"}),
                        entries=VX23_ENTRIES))
    svc.add(FakeOverlay(OverlayConfig(name="vx42", vni=42, search="direct", netns="tn1",
                                      properties={"vxlan/listen_ip": "192.0.2.1",
                                                  "direct/dest_ip": "2001:db8::9"}),
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
        self._thread = threading.Thread(target=self._loop.run_forever, name="admin-server", daemon=True)

    def __enter__(self) -> ThreadedAdminServer:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result(10)
        except BaseException:
            self._shutdown()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(10)
        self._shutdown()

    def _shutdown(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


# -- fixtures (imported by tests/unit/admin/conftest.py and tests/unit/cli/conftest.py) ---------
@pytest.fixture
def service() -> FakeService:
    """The seeded FakeService (vx23, vx42)."""
    return seeded()


@pytest.fixture
def sock_dir():
    """A short directory for unix sockets: pytest's tmp_path can overflow sun_path (108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="varpd-") as d:
        yield Path(d)
