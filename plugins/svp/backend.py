"""svp: the mapping lives on an SVP server (Triton portolan), resolved on demand like illumos varpd's svp plugin.

    lookup(mac)  → VL2_REQ (mac, vnetid = VNI)  → VL2_ACK: OK → Destination, NOTFOUND → None
    arp/ndp(ip)  → VL3_REQ (IPv4 mapped, type 1; IPv6, type 2) → VL3_ACK: the owner's MAC; its underlay
                   destination is remembered (for 10 s) so the daemon's following lookup(mac) needs no request
    shootdown    → LOG_REQ (svp/underlay_ip) every svp/log_interval (default 5-10 s, jittered):
                   VL2 record → a MappingChange removing that MAC (the daemon withdraws its FDB and
                   neighbour entries and looks it up again on the next miss); VL3 record → the IP is
                   looked up again and upserts emitted for its new owner and (without the IP) its old
                   one; then LOG_RM with the ids processed.

Not enumerable: the daemon runs the overlay on demand.  When the server cannot
be reached the overlay is DEGRADED once (with the reason), lookups fail at once
(answered as unknown: the daemon caches that for `negative_ttl` only) while the
client reconnects with backoff 1…32 s; the first good connection clears it.
After a reconnection every MAC and IP this backend answered is checked again
(the server may have restarted and lost its log) and the differences emitted.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import ssl
import time
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from varpd.backend.base import Backend, OverlayContext
from varpd.backend.errors import BackendError, PropertyError
from varpd.backend.properties import PropertySpec, PropType, Protection
from varpd.model import Destination, IPAddress, MappingChange, MappingRecord
from varpd.model.addresses import check_unicast_mac, check_vtep
from varpd.tasks import TaskSet
from varpd_plugins.http_client import RateLimitedLog
from varpd_plugins.svp import wire
from varpd_plugins.svp.client import SvpClient, SvpError, SvpUnavailable
from varpd_plugins.svp.wire import Status

log = logging.getLogger(__name__)

MAX_KNOWN = 65536
HINT_TTL = 10.0  # seconds a VL3_ACK's destination answers lookup(mac) without a request
LOG_BUFFER = 8192  # bytes of log records asked for per LOG_REQ (illumos: 1 KiB)
_UNSET = object()

#: (host, port, underlay_ip) → the VNIs served by svp backends of this process (see _poll_log)
_SERVED: dict[tuple, set[int]] = collections.defaultdict(set)


LOG_INTERVAL = PropertySpec("svp/log_interval", PropType.SECONDS, Protection.WRITE, minimum=0.1, maximum=3600,
                            description="seconds between shootdown log polls (default: 5-10, jittered)")

class SvpBackend(Backend):
    name = "svp"
    enumerable = False
    properties = (
        PropertySpec("svp/host", PropType.STRING, Protection.REQUIRED,
                     description="SVP server: host name or IP address (every address it resolves to is tried)"),
        PropertySpec("svp/port", PropType.UINT, Protection.WRITE, default=wire.DEFAULT_PORT, minimum=1,
                     maximum=65535, description="SVP server TCP port"),
        PropertySpec("svp/underlay_ip", PropType.IP, Protection.REQUIRED,
                     description="this host's underlay IP, which keys its shootdown log (not multicast)"),
        PropertySpec("svp/underlay_port", PropType.UINT, Protection.WRITE, default=wire.DEFAULT_UNDERLAY_PORT,
                     minimum=1, maximum=65535, description="this host's underlay port (kept for illumos parity)"),
        PropertySpec("svp/tls", PropType.BOOL, Protection.WRITE, default=False,
                     description="talk to the server over TLS (certificate verified)"),
        PropertySpec("svp/ca", PropType.STRING, Protection.WRITE,
                     description="absolute path of the CA bundle (PEM) that verifies the server (implies svp/tls)"),
        LOG_INTERVAL,
    )

    request_timeout = 2.0
    idle_timeout = 30.0
    backoff = (1.0, 32.0)

    def __init__(self, ctx: OverlayContext, props: dict[str, Any]) -> None:
        super().__init__(ctx, props)
        self.host = str(props["svp/host"]).strip().strip("[]")
        if not self.host or any(c.isspace() for c in self.host):
            raise PropertyError("svp/host", f"{props['svp/host']!r} is not a host name or IP address")
        self.port = int(props.get("svp/port", wire.DEFAULT_PORT))
        self.underlay_ip: IPAddress = props["svp/underlay_ip"]
        try:
            check_vtep(self.underlay_ip)
        except ValueError as exc:
            raise PropertyError("svp/underlay_ip", str(exc)) from None
        self.underlay_port = int(props.get("svp/underlay_port", wire.DEFAULT_UNDERLAY_PORT))
        self.ca = props.get("svp/ca") or None
        if self.ca and not Path(self.ca).is_absolute():
            raise PropertyError("svp/ca", f"{self.ca} is not an absolute path")
        self.tls = bool(props.get("svp/tls", False)) or bool(self.ca)
        raw = props.get("svp/log_interval")
        self.log_interval = None if raw in (None, "") else LOG_INTERVAL.parse(raw)
        self.server = f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"
        self.client: SvpClient | None = None
        self._dest: collections.OrderedDict[str, Destination] = collections.OrderedDict()
        self._owner: collections.OrderedDict[IPAddress, str] = collections.OrderedDict()
        self._ips_of: dict[str, dict[IPAddress, None]] = {}  # MAC → the IPs _owner gives it, in _owner's order
        self._hint: dict[str, tuple[Destination, float]] = {}
        self._tasks = TaskSet()
        self._resync_task: asyncio.Task | None = None
        self._poll_lock = asyncio.Lock()
        self._lost = False  # a connection failed or broke since the last good one
        self._key = (self.host, self.port, self.underlay_ip)
        self._say = RateLimitedLog(log)
        self.stats: collections.Counter[str] = collections.Counter()

    # -- lifecycle ----------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        try:
            return ssl.create_default_context(cafile=self.ca)
        except (OSError, ssl.SSLError) as exc:
            raise BackendError(f"svp/ca {self.ca}: cannot load: {getattr(exc, 'strerror', None) or exc}") from None

    async def start(self) -> None:
        self.client = SvpClient(self.host, self.port, ssl=self._ssl(), request_timeout=self.request_timeout,
                                connect_timeout=self.request_timeout, idle_timeout=self.idle_timeout,
                                backoff=self.backoff, on_state=self._on_state)
        await self.client.connect()  # in the background: an unreachable server does not stop the overlay
        _SERVED[self._key].add(self.ctx.vni)
        log.info("svp=%s event=started vni=%d underlay=%s tls=%s log_interval=%s", self.server, self.ctx.vni,
                 self.underlay_ip, self.tls, "5-10" if self.log_interval is None else f"{self.log_interval:g}")
        self._tasks.spawn(self._log_loop())

    async def stop(self) -> None:
        _SERVED[self._key].discard(self.ctx.vni)
        await self._tasks.cancel_all()
        if self.client is not None:
            await self.client.close()
            self.client = None

    def _on_state(self, reason: str | None) -> None:
        if reason is None:
            self._tasks.spawn(self._poll_now())  # (re)introduce ourselves: the server logs only for hosts it knows
            if self._lost:  # the server may have restarted (its log lost) or changed while we were away
                self._lost = False
                self._start_resync()
            if self.degraded is not None:
                log.info("svp=%s event=recovered peer=%s", self.server, self.client.peer if self.client else "?")
                self.set_degraded(None)
            return
        self._lost = True
        self._say(logging.WARNING, "unreachable", "svp=%s event=unreachable error=%s; lookups answered as unknown, "
                  "retrying with backoff", self.server, reason)
        if self.degraded is None:
            self.set_degraded(f"svp server {self.server}: {reason}")

    # -- requests -------------------------------------------------------------------------
    async def _ask(self, msg: wire.Message) -> wire.Message | None:
        """The reply, or None (logged at most once per kind every 10 s; degraded when it is the server's fault)."""
        if self.client is None:
            return None
        self.stats["requests"] += 1
        try:
            return await self.client.request(msg)
        except SvpError as exc:
            self.stats["failures"] += 1
            kind = type(exc).__name__
            self._say(logging.WARNING, f"request:{kind}", "svp=%s event=request-failed op=%s error=%s; "
                      "answered as unknown", self.server, msg.OP.name, exc)
            if self.degraded is None and not isinstance(exc, SvpUnavailable):
                self.set_degraded(f"svp server {self.server}: {exc}")
            return None

    def _bad_status(self, op: str, status: int) -> None:
        self._say(logging.WARNING, f"status:{op}:{status}", "svp=%s event=server-error op=%s status=%s",
                  self.server, op, getattr(status, "name", status))

    async def _vl2(self, mac: str) -> Destination | None | object:
        """Destination, None (NOTFOUND) or _UNSET (no usable answer)."""
        ack = await self._ask(wire.Vl2Req(mac, self.ctx.vni))
        if ack is None:
            return _UNSET
        if ack.status == Status.NOTFOUND:
            self._dest.pop(mac, None)
            return None
        if ack.status != Status.OK or not ack.port:
            self._bad_status("VL2_REQ", ack.status)
            return _UNSET
        if self._refused("VL2_ACK", mac, vtep=ack.addr):
            return _UNSET
        self._recovered()
        dest = Destination(ack.addr, ack.port)
        self._remember_dest(mac, dest)
        return dest

    async def _vl3(self, ip: IPAddress) -> tuple[str, Destination] | None | object:
        ack = await self._ask(wire.Vl3Req(ip, self.ctx.vni))
        if ack is None:
            return _UNSET
        if ack.status == Status.NOTFOUND:
            return None
        if ack.status != Status.OK or not ack.port:
            self._bad_status("VL3_REQ", ack.status)
            return _UNSET
        if self._refused("VL3_ACK", str(ip), mac=ack.mac, vtep=ack.ip):
            return _UNSET
        self._recovered()
        dest = Destination(ack.ip, ack.port)
        self._remember_dest(ack.mac, dest)
        return ack.mac, dest

    def _refused(self, op: str, asked: str, *, vtep: IPAddress, mac: str | None = None) -> bool:
        """Whether an answer names a MAC or VTEP that must never be programmed (counted, logged once)."""
        try:
            if mac is not None:
                check_unicast_mac(mac)
            check_vtep(vtep)
        except ValueError as exc:
            self.stats["refused"] += 1
            self._say(logging.WARNING, f"refused:{op}:{exc}", "svp=%s event=answer-refused op=%s asked=%s error=%s; "
                      "answered as unknown", self.server, op, asked, exc)
            return True
        return False

    def _recovered(self) -> None:
        if self.degraded is not None and self.client is not None and self.client.state == "up":
            log.info("svp=%s event=recovered", self.server)
            self.set_degraded(None)

    def _remember_dest(self, mac: str, dest: Destination) -> None:
        self._dest[mac] = dest
        self._dest.move_to_end(mac)
        while len(self._dest) > MAX_KNOWN:
            self._dest.popitem(last=False)

    def _set_owner(self, ip: IPAddress, mac: str | None) -> None:
        """Remember (or, with None, forget) who owns `ip`, keeping the MAC → IPs index in step."""
        self._forget_owner(ip, self._owner.pop(ip, None))
        if mac is None:
            return
        self._owner[ip] = mac
        self._ips_of.setdefault(mac, {})[ip] = None
        while len(self._owner) > MAX_KNOWN:
            self._forget_owner(*self._owner.popitem(last=False))

    def _forget_owner(self, ip: IPAddress, mac: str | None) -> None:
        ips = self._ips_of.get(mac) if mac is not None else None
        if ips is not None:
            ips.pop(ip, None)
            if not ips:
                del self._ips_of[mac]

    def _record(self, mac: str, dest: Destination) -> MappingRecord:
        """`mac`'s record with the overlay IPs this backend has seen it own (the oldest of each family)."""
        ips = self._ips_of.get(mac, ())
        arp = next((ip for ip in ips if ip.version == 4), None)
        ndp = next((ip for ip in ips if ip.version == 6), None)
        return MappingRecord(mac, dest, arp, ndp)

    # -- answers ----------------------------------------------------------------------------
    async def lookup(self, mac: str) -> Destination | None:
        hint = self._hint.pop(mac, None)
        if hint is not None and hint[1] > time.monotonic():
            self.stats["hint_hits"] += 1
            return hint[0]
        dest = await self._vl2(mac)
        return dest if isinstance(dest, Destination) else None

    async def _owner_of(self, ip: IPAddress) -> str | None:
        got = await self._vl3(ip)
        if got is _UNSET:
            return None
        if got is None:
            self._set_owner(ip, None)
            return None
        mac, dest = got
        self._set_owner(ip, mac)
        self._hint[mac] = (dest, time.monotonic() + HINT_TTL)
        if len(self._hint) > 1024:
            now = time.monotonic()
            self._hint = {m: h for m, h in self._hint.items() if h[1] > now}
        return mac

    async def arp(self, ip: IPv4Address) -> str | None:
        return await self._owner_of(ip)

    async def ndp(self, ip: IPv6Address) -> str | None:
        return await self._owner_of(ip)

    async def record(self, mac: str) -> MappingRecord | None:
        dest = await self.lookup(mac)
        return self._record(mac, dest) if dest is not None else None

    # -- shootdown log ----------------------------------------------------------------------
    def _interval(self) -> float:
        return self.log_interval if self.log_interval is not None else random.uniform(5.0, 10.0)

    async def _log_loop(self) -> None:
        # The first poll goes out at once: the server keeps a log only for the underlay IPs it has
        # heard a LOG_REQ from (or that appear in its mapping), so announce ourselves before caching.
        first = True
        while True:
            if not first:
                await asyncio.sleep(self._interval())
            first = False
            try:
                while await self._poll_log():
                    pass  # the reply was full: there is more
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the poller die
                log.exception("svp=%s event=log-poll-bug", self.server)

    async def _poll_now(self) -> None:
        try:
            await self._poll_log()
        except Exception:  # never let a poll's bug escape a callback task
            log.exception("svp=%s event=log-poll-bug", self.server)

    async def _poll_log(self) -> bool:
        """One LOG_REQ → process → LOG_RM; True if the reply may have left records behind."""
        async with self._poll_lock:  # the periodic poll and the on-connect one never process a record twice
            return await self._poll_log_locked()

    async def _poll_log_locked(self) -> bool:
        if self.client is None or self.client.state not in ("up", "idle"):
            return False
        ack = await self._ask(wire.LogReq(LOG_BUFFER, self.underlay_ip))
        if ack is None:
            return False
        if ack.status != Status.OK:
            self._bad_status("LOG_REQ", ack.status)
            return False
        if not ack.records:
            return False
        self.stats["log_records"] += len(ack.records)
        others = _SERVED.get(self._key, set()) - {self.ctx.vni}
        done: list[bytes] = []
        removed: dict[str, MappingRecord] = {}
        upserted: dict[str, MappingRecord] = {}
        moved: list[IPAddress] = []
        for rec in ack.records:
            if rec.vnetid != self.ctx.vni:
                if rec.vnetid not in others:
                    done.append(rec.id)  # nobody here serves that VNI: nobody will ever process it
                continue
            if isinstance(rec, wire.LogVl2):
                dest = self._dest.pop(rec.mac, None)
                self._hint.pop(rec.mac, None)
                removed[rec.mac] = self._record(rec.mac, dest or Destination(self.underlay_ip, 0))
                upserted.pop(rec.mac, None)
                done.append(rec.id)
            else:
                change = await self._recheck_ip(rec.ip)
                if change is None:
                    continue  # no answer: keep the record, try again next poll
                for r in change:
                    if r.mac not in removed:
                        upserted[r.mac] = r
                moved.append(rec.ip)
                done.append(rec.id)
        log.debug("svp=%s event=shootdown records=%d removed=%d upserted=%d", self.server, len(ack.records),
                  len(removed), len(upserted))
        self.emit(MappingChange(upserted=tuple(upserted.values()), removed=tuple(removed.values()),
                                        moved_ips=tuple(moved)))
        if done:
            rm = await self._ask(wire.LogRm(tuple(done)))
            if rm is not None and rm.status != Status.OK:
                self._bad_status("LOG_RM", rm.status)
        full = sum(wire.record_size(r) for r in ack.records) > LOG_BUFFER - 44
        return full and bool(done)

    async def _recheck_ip(self, ip: IPAddress) -> list[MappingRecord] | None:
        """Look `ip` up again: upserts for its new owner and (now without it) its old one; None: no answer."""
        old = self._owner.get(ip)
        got = await self._vl3(ip)
        if got is _UNSET:
            return None
        out = []
        if got is None:
            self._set_owner(ip, None)
        else:
            mac, dest = got
            self._set_owner(ip, mac)
            out.append(self._record(mac, dest))
        if old is not None and (got is None or got[0] != old) and old in self._dest:
            out.append(self._record(old, self._dest[old]))
        return out

    # -- after a reconnection ---------------------------------------------------------------
    def _start_resync(self) -> None:
        if (self._dest or self._owner) and (self._resync_task is None or self._resync_task.done()):
            self._resync_task = self._tasks.spawn(self._resync())

    async def _resync(self) -> None:
        """The server may have restarted (its log lost): check every MAC and IP answered so far."""
        self.stats["resyncs"] += 1
        before = dict(self._dest)
        changed: set[str] = set()
        removed: dict[str, MappingRecord] = {}
        for mac, dest in before.items():
            now = await self._vl2(mac)
            if now is _UNSET:
                return  # unreachable again: the next reconnection resyncs
            if now is None:
                removed[mac] = self._record(mac, dest)
            elif now != dest:
                changed.add(mac)
        moved: list[IPAddress] = []
        for ip in list(self._owner):
            old = self._owner.get(ip)
            change = await self._recheck_ip(ip)
            if change is None:
                return
            if self._owner.get(ip) != old:
                changed.update(r.mac for r in change)
                moved.append(ip)
        upserted = tuple(self._record(m, self._dest[m]) for m in changed if m in self._dest and m not in removed)
        log.info("svp=%s event=resynced macs=%d ips=%d upserted=%d removed=%d", self.server, len(before),
                 len(self._owner), len(upserted), len(removed))
        self.emit(MappingChange(upserted=upserted, removed=tuple(removed.values()), moved_ips=tuple(moved)))
