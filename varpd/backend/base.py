"""The backend contract, in the spirit of libvarpd's plugin ops.

A backend answers "where does this MAC live?" (lookup), and optionally
"which MAC owns this IP?" (arp/ndp), "where do DHCP broadcasts of this MAC go?"
(dhcp_proxy).  Backends that can list their whole table (`enumerable`) let the
daemon push every entry into the kernel ahead of traffic; the others are
resolved on demand from kernel misses.  A backend reports changes through the
listener it is given, so the daemon can reprogram the kernel without restarts.
"""

from __future__ import annotations

import abc
import enum
import logging
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Callable, ClassVar

from varpd.backend.properties import PropertySpec
from varpd.model import Destination, IPAddress, Mapping, MappingChange, MappingRecord

log = logging.getLogger(__name__)


class PluginMode(enum.Enum):
    POINT = "point"  # one fixed destination for everything (direct)
    DYNAMIC = "dynamic"  # a lookup per destination MAC (files, etcd, http, svp)


class DestType(enum.Flag):
    ETHERNET = 0x1
    IP = 0x2
    PORT = 0x4


ChangeListener = Callable[[MappingChange], None]
StatusListener = Callable[[str | None], None]


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One sample of a backend metric: `kind` is "counter" or "gauge"; samples of one name share its help."""

    name: str
    kind: str
    help: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True, slots=True)
class OverlayContext:
    """What a backend may know of the overlay it serves."""

    name: str
    vni: int
    listen_ip: IPAddress
    listen_port: int


class Backend(abc.ABC):
    """Base of every backend. Subclasses set the class attributes and override what they support."""

    name: ClassVar[str]
    mode: ClassVar[PluginMode] = PluginMode.DYNAMIC
    dest_types: ClassVar[DestType] = DestType.IP | DestType.PORT
    properties: ClassVar[tuple[PropertySpec, ...]] = ()
    enumerable: ClassVar[bool] = False
    # True when answers come from memory without I/O: the daemon then answers a kernel miss
    # inline instead of in a task of its own (one event-loop pass less on the hot path).
    answers_from_memory: ClassVar[bool] = False
    # What show-overlay -t says an entry pushed from this backend came from (None: the mode, "push").
    origin: ClassVar[str | None] = None

    def __init__(self, ctx: OverlayContext, props: dict[str, Any]) -> None:
        self.ctx = ctx
        self.props = props
        self._listeners: list[ChangeListener] = []
        self._status_listeners: list[StatusListener] = []
        self._flood_listeners: list[Callable[[], None]] = []
        self.degraded: str | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot run on this host (missing library, ...), or None."""
        return None

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        """Load or connect.  Raise BackendError if the overlay cannot start at all."""

    async def stop(self) -> None:
        """Release everything start() acquired."""

    # -- answers -------------------------------------------------------------
    async def default(self) -> Destination | None:
        """POINT mode: the one destination of every frame."""
        return None

    async def lookup(self, mac: str) -> Destination | None:
        """DYNAMIC mode: where frames to `mac` go; None means drop."""
        return None

    async def arp(self, ip: IPv4Address) -> str | None:
        """The MAC owning overlay IPv4 `ip`, for proxy ARP; None: unknown."""
        return None

    async def ndp(self, ip: IPv6Address) -> str | None:
        """The MAC owning overlay IPv6 `ip`, for proxy NDP; None: unknown."""
        return None

    async def dhcp_proxy(self, mac: str) -> str | None:
        """The MAC that DHCP broadcasts from `mac` are re-addressed to, or None."""
        return None

    async def record(self, mac: str) -> MappingRecord | None:
        """The whole record of `mac` (used by the native DHCP server), when the backend has one."""
        return None

    def snapshot(self) -> Mapping | None:
        """Enumerable backends: the whole current table, for push mode."""
        return None

    # -- admin views (varpd.daemon.backend_views) -------------------------------------
    def extra(self) -> dict[str, Any]:
        """Backend state show-overlay adds to the overlay's description (sessions, peers...)."""
        return {}

    def detail(self, mac: str) -> dict[str, Any] | None:
        """Where the backend's answer for `mac` came from (lookup-overlay), when it knows more."""
        return None

    def metrics(self) -> list[MetricSample]:
        """The backend's own /metrics samples (the overlay and plugin labels are added)."""
        return []

    # -- change stream -------------------------------------------------------
    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def add_status_listener(self, listener: StatusListener) -> None:
        self._status_listeners.append(listener)

    def emit(self, change: MappingChange) -> None:
        """Tell the daemon the mapping changed; subclasses call this.  A listener's bug is logged and
        goes no further: it must neither stop the backend's watcher nor keep the change from the others."""
        if change:
            self._notify(self._listeners, change)

    def _notify(self, listeners: list, *args: object) -> None:
        for listener in list(listeners):
            try:
                listener(*args)
            except Exception:
                log.exception("backend=%s overlay=%s event=listener-failed", self.name, self.ctx.name)

    # -- flood peers (vxlan/flood = replicate) --------------------------------------
    def flood_peers(self) -> frozenset[Destination]:
        """VTEPs that want this overlay's broadcast and multicast but hold no record of the mapping
        (EVPN type-3 routes, a gateway): with vxlan/flood=replicate each gets one copy of every
        broadcast, next to the mapping's VTEPs and vxlan/flood_peers. Call flood_peers_changed()
        whenever the answer changes."""
        return frozenset()

    def add_flood_listener(self, listener: Callable[[], None]) -> None:
        self._flood_listeners.append(listener)

    def flood_peers_changed(self) -> None:
        """Tell the daemon flood_peers() changed: the flood list is reprogrammed at once."""
        self._notify(self._flood_listeners)

    def set_degraded(self, reason: str | None) -> None:
        """Record (or clear, with None) why this backend is not fully serving."""
        if reason != self.degraded:
            self.degraded = reason
            for listener in list(self._status_listeners):
                listener(reason)


class MappingBackend(Backend):
    """A DYNAMIC backend that holds a whole `Mapping` in memory (files, and caches of remote ones)."""

    enumerable = True
    answers_from_memory = True

    def __init__(self, ctx: OverlayContext, props: dict[str, Any]) -> None:
        super().__init__(ctx, props)
        self.mapping = Mapping()

    def replace_mapping(self, newer: Mapping, change: MappingChange | None = None) -> MappingChange:
        """Swap in a new table and emit only the difference (`change`, when the caller computed
        `self.mapping.diff(newer)` already, e.g. off the loop)."""
        if change is None:
            change = self.mapping.diff(newer)
        self.mapping = newer
        self.emit(change)
        return change

    async def lookup(self, mac: str) -> Destination | None:
        rec = self.mapping.by_mac.get(mac)
        return rec.dest if rec else None

    async def arp(self, ip: IPv4Address) -> str | None:
        rec = self.mapping.by_ip.get(ip)
        return rec.mac if rec else None

    async def ndp(self, ip: IPv6Address) -> str | None:
        rec = self.mapping.by_ip.get(ip)
        return rec.mac if rec else None

    async def dhcp_proxy(self, mac: str) -> str | None:
        rec = self.mapping.by_mac.get(mac)
        return rec.dhcp_proxy if rec else None

    async def record(self, mac: str) -> MappingRecord | None:
        return self.mapping.by_mac.get(mac)

    def snapshot(self) -> Mapping | None:
        return self.mapping
