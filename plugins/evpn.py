"""evpn: this host is a member of a BGP EVPN fabric (RFC 7432 / RFC 8365), through gobgpd.

A MappingBackend (enumerable → push mode).  The BGP speaker is GoBGP's daemon, started and
supervised by varpd (varpd_plugins.gobgp_engine) and driven over its gRPC API; no BGP is
implemented here.

Learned (routes whose route target is the overlay's import RT):
- type 2 MAC/IP → a record: MAC → the route's next hop (VTEP), the overlay IPs from the MAC/IP
  routes of the same VTEP (proxy ARP/NDP);  the MAC mobility sequence number orders moves;
- type 3 IMET → the overlay's flood peers (`flood_peers()`: with vxlan/flood=replicate each gets
  a copy of every broadcast; shown in show-overlay -b either way).
Advertised: the local records of ``evpn/local`` (a hosts.json, overlay_files(5); the records whose
``ip`` is this host's ``vxlan/listen_ip``) as type-2 routes (MAC only, and one per IP, as FRR
does), and this VTEP as a type-3 route; RD router-id:VNI and RT ASN:VNI unless set.

Failure: when a BGP session (or gobgpd itself) goes down, the routes learned through it are kept,
marked stale, for ``evpn/stale_time`` seconds and the overlay is DEGRADED with the reason.  Routes
the peer sends again once it is back replace the stale ones; what is still stale when the peer's
End-of-RIB arrives (gobgpd advertises the graceful-restart capability, so peers send it) is
withdrawn, so only the difference reaches the kernel.  End-of-RIB is read from gobgpd's peer
state, which runs ahead of its watch stream: the sweep therefore works on gobgpd's table read at
that moment (a ``Resync``), not on what the watch has delivered so far.  A remote VTEP that
withdraws its IMET and type-2 routes at once (its host stopped, behind a route reflector that
keeps nothing) is held the same way for ``evpn/vtep_hold`` seconds (varpd_plugins.evpn_hold).
Route updates are absorbed in batches: what arrived within ``COALESCE`` of the last drain is
applied together, ``BATCH`` paths at a time (yielding to the event loop between), each batch one
MappingChange.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from varpd.backend.base import MappingBackend, MetricSample, OverlayContext
from varpd.backend.errors import BackendError, PropertyError
from varpd.backend.properties import PropertySpec, PropType, Protection
from varpd.model import Destination, Mapping, MappingChange, MappingRecord
from varpd.tasks import TaskSet

from varpd_plugins import gobgp_api
from varpd_plugins.evpn_hold import FORGET, WAIT, VtepHold
from varpd_plugins.evpn_routes import TYPE2, TYPE3, EvpnRoute, RouteTable, auto_rd, auto_rt, parse_rd, parse_rt

log = logging.getLogger(__name__)

BATCH = 250  # paths decoded and applied per pass before yielding to the loop (~12 ms idle)
COALESCE = 0.01
"""s from one drain's start to the next: what arrives meanwhile waits and is applied with the rest.
gobgpd 3.10's watch delivers one path a message (its WatchEvent has no batch size), so a flood of
UPDATEs was one MappingChange, and one kernel programming round, a route.  The first path after a
quiet window is applied at once (a lone UPDATE waits nothing: bench fig12's p50 is unchanged); one
that follows another within the window waits the rest of it, e.g. the MAC/IP route after its MAC
route.  Bench fig12's 10k type-2 routes, varpd's CPU on its host: 4.1-6.4 s without, 2.0-2.5 s at
10 ms, 1.8-2.1 s at 20 ms; 10 ms, not 20: the same saving within the noise, half the worst wait
(below FRR zebra's own 12 ms p50 for one route)."""
WITHDRAW_HOLD = 0.1  # s a withdrawal waits: gobgpd sends a dropped session's withdrawals before its state
RESYNC_CHECK = 0.25  # s between End-of-RIB checks of a re-established session that left stale routes
ESTABLISHED = "ESTABLISHED"


@dataclass(frozen=True)
class Resync:
    """A re-established session sent End-of-RIB: `paths` is gobgpd's table read after it (the
    watch may not have delivered all of them yet: FRR's MAC/IP routes came 10 ms after the check
    saw End-of-RIB).  Queued in the inbox, so it applies after every path the watch gave before."""

    peer: str
    paths: list[Any]

    def paths_of_peer(self) -> list[Any]:
        return [p for p in self.paths if not p.is_withdraw and not p.stale and p.neighbor_ip == self.peer]


def _neighbors(raw: Any) -> tuple[str, ...]:
    out = []
    for item in str(raw or "").split(","):
        if item.strip():
            try:
                out.append(str(ipaddress.ip_address(item.strip())))
            except ValueError:
                raise PropertyError("evpn/neighbors", f"{item.strip()!r} is not an IP address") from None
    if not out:
        raise PropertyError("evpn/neighbors", "no BGP neighbour given (IP[,IP...])")
    return tuple(dict.fromkeys(out))


class EvpnBackend(MappingBackend):
    name = "evpn"
    origin = "evpn"
    properties = (
        PropertySpec("evpn/asn", PropType.UINT, Protection.REQUIRED, minimum=1, maximum=4294967295,
                     description="this host's BGP AS number"),
        PropertySpec("evpn/neighbors", PropType.STRING, Protection.REQUIRED,
                     description="BGP neighbours (route reflectors, FRR hosts): IP[,IP...]"),
        PropertySpec("evpn/peer_asn", PropType.UINT, minimum=0, maximum=4294967295, default=0,
                     description="the neighbours' AS number (0: evpn/asn, iBGP)"),
        PropertySpec("evpn/router_id", PropType.STRING, default="",
                     description="BGP router id (empty: vxlan/listen_ip)"),
        PropertySpec("evpn/rd", PropType.STRING, default="",
                     description="route distinguisher of this host's routes (empty: ROUTER_ID:VNI)"),
        PropertySpec("evpn/rt", PropType.STRING, default="",
                     description="route target imported and exported (empty: ASN:VNI, as FRR)"),
        PropertySpec("evpn/local", PropType.STRING, default="",
                     description="hosts.json whose records at vxlan/listen_ip are advertised (empty: none)"),
        PropertySpec("evpn/stale_time", PropType.SECONDS, default=120, maximum=3600,
                     description="seconds routes of a lost BGP session are kept; the graceful-restart time advertised"),
        PropertySpec("evpn/vtep_hold", PropType.SECONDS, maximum=3600,
                     description="seconds a remote VTEP's entries are kept when it withdraws its IMET and type-2 "
                                 "routes at once (its host stopped, behind a route reflector that is no EVPN "
                                 "graceful-restart helper, e.g. FRR 8.4); unset: evpn/stale_time; 0: off"),
        PropertySpec("evpn/sync_wait", PropType.SECONDS, default=10, maximum=300,
                     description="seconds start waits for the neighbours' tables (End-of-RIB) before the overlay "
                                 "is programmed"),
        PropertySpec("evpn/hold_time", PropType.UINT, default=9, minimum=3, maximum=65535,
                     description="BGP hold time in seconds (keepalive a third of it)"),
        PropertySpec("evpn/api_port", PropType.UINT, default=50051, minimum=1, maximum=65535,
                     description="TCP port on 127.0.0.1 of gobgpd's gRPC API"),
        PropertySpec("evpn/bgp_port", PropType.UINT, default=179, minimum=1, maximum=65535,
                     description="TCP port gobgpd listens on for BGP"),
        PropertySpec("evpn/gobgpd", PropType.STRING, default="gobgpd", description="the gobgpd program"),
    )

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return gobgp_api.missing_reason()

    def __init__(self, ctx: OverlayContext, props: dict[str, Any]) -> None:
        super().__init__(ctx, props)
        spec = {s.name: s for s in self.properties}

        def get(name: str) -> Any:
            return spec[name].parse(props[name]) if props.get(name) not in (None, "") else (
                spec[name].parse(spec[name].default) if spec[name].default is not None else None)

        self.asn = get("evpn/asn")
        if self.asn is None:
            raise PropertyError("evpn/asn", "unset required property")
        self.neighbors = _neighbors(props.get("evpn/neighbors"))
        self.router_id = str(get("evpn/router_id") or ctx.listen_ip)
        try:
            ipaddress.IPv4Address(self.router_id)
        except ValueError:
            raise PropertyError("evpn/router_id", f"{self.router_id!r} is not an IPv4 address "
                                "(give one when vxlan/listen_ip is IPv6)") from None
        self.rd = str(get("evpn/rd") or auto_rd(self.router_id, ctx.vni))
        self.rt = str(get("evpn/rt") or auto_rt(self.asn, ctx.vni))
        for name, value, check in (("evpn/rd", self.rd, parse_rd), ("evpn/rt", self.rt, parse_rt)):
            try:
                check(value)
            except ValueError as exc:
                raise PropertyError(name, str(exc)) from None
        local = str(get("evpn/local") or "")
        if local and not Path(local).is_absolute():
            raise PropertyError("evpn/local", f"{local!r} is not an absolute path")
        self.local_path = Path(local) if local else None
        self.stale_time: float = get("evpn/stale_time")
        hold = get("evpn/vtep_hold")
        self.vtep_hold: float = self.stale_time if hold is None else hold
        self.sync_wait: float = get("evpn/sync_wait")
        from varpd_plugins.gobgp_engine import EngineSettings

        self.settings = EngineSettings(
            asn=self.asn, router_id=self.router_id, listen_ip=str(ctx.listen_ip), neighbors=self.neighbors,
            peer_asn=get("evpn/peer_asn") or self.asn, api_port=get("evpn/api_port"),
            bgp_port=get("evpn/bgp_port"), hold_time=get("evpn/hold_time"), binary=str(get("evpn/gobgpd")),
            restart_time=max(1, int(self.stale_time)))
        self.table = RouteTable(local_ip=ctx.listen_ip, port=ctx.listen_port)
        self.hold = VtepHold(self.table, self.vtep_hold)
        self.stats: collections.Counter[str] = collections.Counter()
        self.peers: dict[str, str] = {a: "IDLE" for a in self.neighbors}
        self._down_since: dict[str, float] = {}
        self._up_since: dict[str, float] = {}
        self._engine_lost: str | None = "gobgpd not started"
        self._inbox: collections.deque = collections.deque()
        self._wake = asyncio.Event()
        self._draining = False
        self._held: list[tuple[float, str, tuple]] = []  # (when, peer, NLRI key) withdrawals waiting
        self._advertised: dict[str, tuple[MappingRecord, int, list[bytes]]] = {}  # mac → (rec, seq, uuids)
        self._imet: bytes | None = None
        self._flood: frozenset = frozenset()  # the flood peers last told to the daemon
        self._adv_lock = asyncio.Lock()
        self._files: Any = None
        self._tasks = TaskSet()
        self.engine: Any = None

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        from varpd_plugins import gobgp_engine

        try:
            self.api = gobgp_api.load()
        except gobgp_api.ApiUnavailable as exc:
            raise BackendError(f"evpn: {exc}") from None
        if self.local_path is not None:
            from varpd_plugins.files import FilesBackend

            self._files = FilesBackend(self.ctx, {"files/config": str(self.local_path)})
            await self._files.start()  # a bad file at start is fatal, as for files
            self._set_local(self._files.mapping)
            self._files.add_listener(lambda _change: self._set_local(self._files.mapping, advertise=True))
        self.mapping = self.table.mapping()
        self._tasks.spawn(self._drain())
        self._tasks.spawn(self._timers())
        try:
            self.engine = await gobgp_engine.acquire(self.settings, self)
            await self._initial_sync()
        except BaseException:
            await self.stop()
            raise
        self._refresh_status()

    async def _initial_sync(self) -> None:
        """Wait (at most evpn/sync_wait) until every session is up, has sent End-of-RIB and its
        routes are in the mapping: the daemon programs the kernel from the mapping start() leaves,
        and an empty one would remove every entry a restarted varpd finds there, for as long as
        BGP takes to converge."""
        deadline = time.monotonic() + self.sync_wait
        pending, synced = set(self.neighbors), []
        while pending and time.monotonic() < deadline:
            for peer in [p for p in pending if self.peers.get(p) == ESTABLISHED]:
                if await self._end_of_rib(peer):
                    pending.discard(peer)
                    synced.append(peer)
            await asyncio.sleep(0.05)
        await self._queue_resyncs(synced)  # End-of-RIB runs ahead of the watch: start() sees every route
        while (self._inbox or self._draining) and time.monotonic() < deadline + 1:
            await asyncio.sleep(0.01)  # the drain task applies what the sessions sent
        if pending:
            log.warning("overlay=%s evpn event=start-without-sync peers=%s waited=%gs", self.ctx.name,
                        ",".join(sorted(pending)), self.sync_wait)
        else:
            log.info("overlay=%s evpn event=synced routes=%d records=%d", self.ctx.name, len(self.table.routes),
                     len(self.mapping))

    async def stop(self) -> None:
        from varpd_plugins import gobgp_engine

        await self._tasks.cancel_all()
        if self._files is not None:
            await self._files.stop()
        engine, self.engine = self.engine, None
        if engine is not None:
            await self._withdraw_all(engine)  # another overlay may keep gobgpd (and its routes) running
            await gobgp_engine.release(engine, self)

    # -- local records: advertised ---------------------------------------------------------
    def _set_local(self, mapping: Mapping, *, advertise: bool = False) -> None:
        mine = {mac: rec for mac, rec in mapping.by_mac.items() if rec.dest.ip == self.ctx.listen_ip}
        others = len(mapping) - len(mine)
        if others:
            log.warning("overlay=%s evpn=%s event=local-records-ignored count=%d reason=ip-is-not-vxlan/listen_ip",
                        self.ctx.name, self.local_path, others)
        self.table.local = mine
        for mac in mine:
            if (best := self.table.best(mac)) is not None and best.sticky and not best.held:
                self._sticky_conflict(best)
        self._apply_touched(set(mine) | set(self._advertised))
        if advertise and self.engine is not None and self.engine.running:
            self._tasks.spawn(self._advertise())

    async def _advertise(self, *, again: bool = False) -> None:
        """Make gobgpd's local routes equal to the local records (all of them again after a restart)."""
        from varpd_plugins.evpn_codec import imet_path, mac_ip_paths

        engine = self.engine
        async with self._adv_lock:
            if engine is None or not engine.running:
                return
            try:
                if again:
                    self._advertised.clear()
                    self._imet = None
                if self._imet is None:
                    path = imet_path(self.api, self.ctx.listen_ip, rd=self.rd, rt=self.rt, vni=self.ctx.vni)
                    self._imet = await engine.add_path(path)
                    self.stats["routes_advertised"] += 1
                want = self.table.local
                for mac in [m for m in self._advertised if m not in want or want[m] != self._advertised[m][0]]:
                    _, _, uuids = self._advertised.pop(mac)
                    for uuid in uuids:
                        await engine.delete_path(uuid)
                    self.stats["routes_unadvertised"] += len(uuids)
                for mac, rec in want.items():
                    if mac in self._advertised:
                        continue
                    seq = self.table.seq_for_local(mac)
                    uuids = [await engine.add_path(p)
                             for p in mac_ip_paths(self.api, rec, rd=self.rd, rt=self.rt, vni=self.ctx.vni, seq=seq)]
                    self._advertised[mac] = (rec, seq, uuids)
                    self.stats["routes_advertised"] += len(uuids)
            except Exception as exc:  # gobgpd went away mid-way: engine_ready advertises everything again
                log.error("overlay=%s evpn event=advertise-failed error=%s", self.ctx.name, exc)

    async def _withdraw_all(self, engine: Any) -> None:
        """Delete this overlay's routes from gobgpd (it withdraws them from every peer)."""
        uuids = [u for _, _, us in self._advertised.values() for u in us] + ([self._imet] if self._imet else [])
        self._advertised.clear()
        self._imet = None
        if not engine.running:
            return
        try:
            async with asyncio.timeout(5):
                for uuid in uuids:
                    await engine.delete_path(uuid)
        except Exception as exc:  # gobgpd gone or slow: its own stop withdraws everything anyway
            log.warning("overlay=%s evpn event=withdraw-failed error=%s", self.ctx.name, exc)

    # -- engine callbacks (called on the loop, must not block) ---------------------------
    def engine_paths(self, paths: list[Any]) -> None:
        self._inbox.append(paths)
        self._wake.set()

    def engine_peer(self, address: str, state: str) -> None:
        self._inbox.append((address, state))
        self._wake.set()

    def engine_lost(self, reason: str) -> None:
        self._inbox.append(reason)
        self._wake.set()

    async def engine_ready(self, engine: Any) -> None:
        self.engine = engine
        self._engine_lost = None
        self._inbox.append(None)  # ready marker: processed in order with the paths
        self._wake.set()
        await self._advertise(again=True)

    # -- the inbox, in batches -----------------------------------------------------------
    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            started = time.monotonic()
            self._draining = True
            try:
                await self._drain_once()
            except Exception:  # never stop learning: one bad batch is logged and dropped
                log.exception("overlay=%s evpn event=batch-failed", self.ctx.name)
            finally:
                self._draining = False
            if (rest := started + COALESCE - time.monotonic()) > 0:
                await asyncio.sleep(rest)  # a flood's next paths gather in the inbox meanwhile

    async def _drain_once(self) -> None:
        from varpd_plugins.evpn_codec import decode

        touched: set[str] = set()
        budget = BATCH
        while self._inbox:
            item = self._inbox.popleft()
            if isinstance(item, Resync) and self.peers.get(item.peer) != ESTABLISHED:
                continue  # the session dropped again since the read: its routes stay stale, as they are
            if isinstance(item, (list, Resync)):
                resync = item if isinstance(item, Resync) else None
                paths = item if resync is None else resync.paths_of_peer()
                for start in range(0, len(paths), BATCH):
                    chunk = paths[start:start + BATCH]
                    for path in chunk:  # a table read is learned, never counted as received
                        self._take(decode(self.api, path), path.is_withdraw, touched, received=resync is None)
                    budget -= len(chunk)
                    if budget <= 0:  # yield to the loop: a 10k-route flood never stalls it
                        self._apply_touched(touched)
                        touched, budget = set(), BATCH
                        await asyncio.sleep(0)
                if resync is not None:
                    touched |= self._sweep_resynced(resync.peer, len(paths))
            elif isinstance(item, tuple):
                touched |= self._peer_state(*item)
            elif isinstance(item, str):
                touched |= self._lost(item)
        self._apply_touched(touched)
        self._flood_check()
        self._refresh_status()

    def _take(self, route: EvpnRoute | None, withdraw: bool, touched: set[str], *, received: bool = True) -> None:
        """Learn one path (`received`: from the watch, counted; else read from gobgpd's table)."""
        if route is None or route.peer == "":  # another route type, or this host's own route
            return
        if self.rt not in route.rts and not withdraw:
            return
        if withdraw:
            self.stats["routes_withdrawn"] += 1
            self._held.append((time.monotonic(), route.peer, route.key))
            return
        if received:
            self.stats["routes_received"] += 1
            if route.kind == TYPE2 and route.vni and route.vni != self.ctx.vni:
                self.stats["routes_wrong_vni"] += 1
        if route.kind == TYPE3 and self.hold.back(route.vtep):
            log.info("overlay=%s evpn event=vtep-back vtep=%s held_routes=%d", self.ctx.name, route.vtep,
                     self.table.held_of(route.vtep, None))
        if route.sticky and route.mac in self.table.local and route.key not in self.table.routes:
            self._sticky_conflict(route)
        if (mac := self.table.learn(route)) is not None:
            touched.add(mac)

    def _sticky_conflict(self, route: EvpnRoute) -> None:
        """RFC 7432 §15.2: a static MAC of another VTEP is a VNIC here; the operator must know."""
        self.stats["sticky_conflicts"] += 1
        log.warning("overlay=%s evpn event=sticky-mac-is-local mac=%s vtep=%s rd=%s: the local record is kept",
                    self.ctx.name, route.mac, route.vtep, route.rd)

    def _release_held(self, now: float) -> set[str]:
        """Apply the withdrawals older than WITHDRAW_HOLD whose session is still up, IMET ones first
        (a VTEP's type-2 withdrawals that came just before its IMET's are held with it)."""
        touched: set[str] = set()
        keep = []
        for when, peer, key in sorted(self._held, key=lambda w: w[2][0] != TYPE3):
            if self.peers.get(peer) != ESTABLISHED:
                continue  # the session dropped: the route stays, stale
            if now - when < WITHDRAW_HOLD:
                keep.append((when, peer, key))
                continue
            action = self.hold.withdrawal(key, when, now)
            if action == WAIT:
                keep.append((when, peer, key))
            elif action == FORGET and (mac := self.table.forget(key)) is not None:
                touched.add(mac)
        self._held = keep
        return touched

    def _hold_tick(self, now: float) -> tuple[set[str], bool]:
        """VTEP holds: log the VTEPs newly lost, end those due; (MACs touched, whether any ended)."""
        for vtep in self.hold.started:
            self.stats["vtep_holds"] += 1
            log.warning("overlay=%s evpn event=vtep-withdrawn vtep=%s held_routes=%d keep_for=%gs",
                        self.ctx.name, vtep, self.table.held_of(vtep, None), self.vtep_hold)
        self.hold.started.clear()
        touched, done = self.hold.tick(now)
        for vtep, why, n in done:
            log.warning("overlay=%s evpn event=vtep-hold-%s vtep=%s removed_routes=%d", self.ctx.name,
                        "expired" if why == "expired" else "ended-imet-only", vtep, n)
        return touched, bool(done)

    def _peer_state(self, address: str, state: str) -> set[str]:
        before = self.peers.get(address)
        self.peers[address] = state
        now = time.monotonic()
        if before == ESTABLISHED and state != ESTABLISHED:
            n = self.table.mark_stale(address)
            self._down_since[address] = now
            log.warning("overlay=%s evpn event=session-down peer=%s state=%s stale_routes=%d keep_for=%gs",
                        self.ctx.name, address, state, n, self.stale_time)
            self.stats["session_drops"] += 1
        elif state == ESTABLISHED and before != ESTABLISHED:
            self._up_since[address] = now
            self._down_since.pop(address, None)
            log.info("overlay=%s evpn event=session-up peer=%s", self.ctx.name, address)
        return set()

    def _lost(self, reason: str) -> set[str]:
        """gobgpd is gone: every learned route is stale, every session down."""
        self._engine_lost = reason
        now = time.monotonic()
        n = self.table.mark_stale()
        for address in self.peers:
            if self.peers[address] == ESTABLISHED:
                self._down_since[address] = now
            self.peers[address] = "IDLE"
        self._held.clear()
        self._down_since.setdefault("", now)
        log.warning("overlay=%s evpn event=engine-lost error=%s stale_routes=%d", self.ctx.name, reason, n)
        return set()

    async def _timers(self) -> None:
        """Withdrawals past their hold, stale routes past stale_time or of a re-synced session."""
        while True:
            await asyncio.sleep(WITHDRAW_HOLD / 2)
            try:
                await self._tick(time.monotonic())
            except Exception:  # the timers must keep running: stale routes would stay forever
                log.exception("overlay=%s evpn event=timer-failed", self.ctx.name)

    async def _tick(self, now: float) -> None:
        """Withdrawals past their hold; stale routes past stale_time, or of a session that sent End-of-RIB."""
        touched = self._release_held(now) if self._held else set()
        held_touched, held_ended = self._hold_tick(now) if self.hold.ends else (set(), False)
        touched |= held_touched
        for peer, since in list(self._down_since.items()):
            if now - since >= self.stale_time:
                del self._down_since[peer]
                gone = self.table.sweep_stale(None if peer == "" else peer)
                log.warning("overlay=%s evpn event=stale-expired peer=%s macs=%d",
                            self.ctx.name, peer or "all", len(set(gone)))
                touched.update(gone)
        synced = []
        for peer in list(self._up_since):
            if now - self._up_since[peer] < RESYNC_CHECK:
                continue
            self._up_since[peer] = now
            if not self.table.stale_count():
                self._up_since.pop(peer, None)
                self._down_since.pop("", None)
            elif await self._end_of_rib(peer):
                synced.append(peer)
        if await self._queue_resyncs(synced):  # else they are checked again
            for peer in synced:
                self._up_since.pop(peer, None)
        if touched or held_ended:
            self._apply_touched(touched)
            self._flood_check()
        self._refresh_status()

    def _sweep_resynced(self, peer: str, n_paths: int) -> set[str]:
        """`peer`'s routes as gobgpd holds them after its End-of-RIB are learned: what is still
        stale of that peer was not sent again and goes.  Paths the watch delivers later are the
        same routes again and change nothing."""
        gone = self.table.sweep_stale(peer)
        if self.table.stale_count() == 0:
            self._down_since.pop("", None)
        log.info("overlay=%s evpn event=resynced peer=%s paths=%d withdrawn_macs=%d",
                 self.ctx.name, peer, n_paths, len(set(gone)))
        return set(gone)

    async def _queue_resyncs(self, peers: list[str]) -> bool:
        """One read of gobgpd's table for the `peers` that sent End-of-RIB, queued as a Resync
        each; False when it cannot be read now (the caller checks again)."""
        if not peers:
            return False
        paths = await self._ask("table-read-failed", lambda engine: engine.best_paths(), None)
        if paths is None:
            return False
        self._inbox.extend(Resync(peer, paths) for peer in peers)
        self._wake.set()
        return True

    async def _end_of_rib(self, peer: str) -> bool:
        return await self._ask(f"eor-check-failed peer={peer}", lambda engine: engine.end_of_rib(peer), False)

    async def _ask(self, what: str, call: Any, failed: Any) -> Any:
        """`call(engine)`'s answer, or `failed` when gobgpd is not running or the call fails (logged as `what`)."""
        engine = self.engine
        if engine is None or not engine.running:
            return failed
        try:
            return await call(engine)
        except Exception as exc:
            log.debug("overlay=%s evpn event=%s error=%s", self.ctx.name, what, exc)
            return failed

    def _apply_touched(self, macs: set[str]) -> None:
        """Recompute the records of `macs` and emit only what changed (one MappingChange)."""
        if not macs:
            return
        by_mac, by_ip = dict(self.mapping.by_mac), self.mapping.by_ip.copy()
        upserted, removed = [], []
        for mac in macs:
            new, old = self.table.record(mac), by_mac.get(mac)
            if new == old:
                continue
            if old is not None:
                for ip in (old.arp, old.ndp):
                    if ip is not None and by_ip.get(ip) is old:
                        del by_ip[ip]
            if new is None:
                del by_mac[mac]
                removed.append(old)
                continue
            by_mac[mac] = new
            for ip in (new.arp, new.ndp):
                if ip is not None:
                    by_ip[ip] = new
            upserted.append(new)
        self.mapping = Mapping(by_mac, by_ip)
        if upserted or removed:
            self.stats["batches"] += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("overlay=%s evpn event=batch upserted=%d removed=%d macs=%s", self.ctx.name, len(upserted),
                          len(removed), ",".join(r.mac for r in (*upserted[:4], *removed[:4])))
            self.emit(MappingChange(upserted=tuple(upserted), removed=tuple(removed)))

    # -- flooding (vxlan/flood = replicate) ----------------------------------------------------
    def flood_peers(self) -> frozenset[Destination]:
        """The VTEPs of the IMET routes: each gets a copy of every broadcast when the overlay floods."""
        return self._flood

    def _flood_check(self) -> None:
        now = frozenset(Destination.of(ip, self.ctx.listen_port) for ip in self.table.flood_list())
        if now != self._flood:
            self._flood = now
            self.flood_peers_changed()

    # -- status and admin views -------------------------------------------------------------
    def _refresh_status(self) -> None:
        held = self.table.held_count() if self.hold.ends else 0  # a pass over the routes: only when holding
        stale = self.table.stale_count() - held
        if self._engine_lost is not None:
            reason = f"gobgpd: {self._engine_lost}"
        else:
            down = [f"{a} {s}" for a, s in self.peers.items() if s != ESTABLISHED]
            reason = f"BGP session not established: {', '.join(down)}" if down else None
        if reason and stale:
            reason += f"; {stale} learned routes kept stale for up to {self.stale_time:g}s"
        elif reason is None and stale:
            reason = f"{stale} stale routes awaiting resync"
        if held:
            vteps = ", ".join(sorted(str(v) for v in self.hold.ends))
            text = f"VTEP {vteps} withdrew its routes: {held} kept stale for up to {self.vtep_hold:g}s"
            reason = f"{reason}; {text}" if reason else text
        self.set_degraded(reason)

    def extra(self) -> dict[str, Any]:
        """show-overlay's evpn view: sessions, RD/RT, the flood list, route counts."""
        return {"engine": "gobgpd", "engine_state": self.engine.state if self.engine else "stopped",
                "engine_restarts": self.engine.restarts if self.engine else 0,
                "router_id": self.router_id, "asn": self.asn, "rd": self.rd, "rt": self.rt,
                "sessions": dict(self.peers), "flood_list": [str(ip) for ip in self.table.flood_list()],
                "routes": len(self.table.routes), "stale_routes": self.table.stale_count(),
                "vtep_hold": self.vtep_hold, "held_vteps": self.hold.describe(time.monotonic()),
                "advertised_macs": len(self._advertised), "counters": dict(self.stats)}

    def detail(self, mac: str) -> dict[str, Any] | None:
        """lookup-overlay's view of one MAC: the routes it was learned from, or how it is advertised."""
        routes = [r.describe() for r in self.table.routes_of(mac)]
        adv = self._advertised.get(mac)
        if not routes and adv is None:
            return None
        best = self.table.best(mac)
        out: dict[str, Any] = {"routes": routes, "best": best.describe() if best else None}
        if adv is not None:
            out["advertised"] = {"rd": self.rd, "rt": self.rt, "next_hop": str(self.ctx.listen_ip), "seq": adv[1],
                                 "routes": len(adv[2])}
        return out

    def metrics(self) -> list[MetricSample]:
        c = "counter"
        out = [MetricSample("varpd_evpn_routes", c, "EVPN routes received, withdrawn by peers, advertised and "
                            "withdrawn by this host", (("event", event),), float(self.stats.get(key, 0)))
               for event, key in (("received", "routes_received"), ("withdrawn", "routes_withdrawn"),
                                  ("advertised", "routes_advertised"), ("unadvertised", "routes_unadvertised"))]
        out += [MetricSample("varpd_evpn_session_established", "gauge", "1 while the BGP session is Established",
                             (("peer", peer),), 1.0 if state == ESTABLISHED else 0.0)
                for peer, state in self.peers.items()]
        stale = self.table.stale_count()
        out += [MetricSample("varpd_evpn_routes_learned", "gauge", "learned EVPN routes held, fresh and stale",
                             (("state", state),), float(n))
                for state, n in (("fresh", len(self.table.routes) - stale), ("stale", stale))]
        out.append(MetricSample("varpd_evpn_flood_peers", "gauge", "VTEPs in the flood list (IMET routes)", (),
                                float(len(self.table.flood_list()))))
        out.append(MetricSample("varpd_evpn_engine_restarts", c, "times gobgpd was restarted", (),
                                float(self.engine.restarts if self.engine else 0)))
        return out
