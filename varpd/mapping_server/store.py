"""The table the mapping server serves, and its change feed.

One overlay (VNI) per store.  The table is either loaded from a hosts.json
(re-read when the file changes: the difference is published as events) or
starts empty; PUT and DELETE change it in memory (with a hosts file, until
the file next changes: the file then wins, as a reload replaces the table).

Every change is an `Event` with a sequence number.  The last `backlog` events
are kept so that a client that reconnects with `Last-Event-ID: <epoch>:<seq>`
gets what it missed; a client that cannot be caught up (another epoch, i.e.
the server restarted, or too far behind) is told to `resync`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from varpd.backend.errors import ConfigError
from varpd.config.hosts import load_hosts
from varpd.model import IPAddress, Mapping, MappingRecord

log = logging.getLogger(__name__)


class Conflict(ValueError):
    """A write that would give one overlay IP two owners."""


class ReadOnly(PermissionError):
    """A write to a store started read-only."""


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    kind: str  # "upsert" | "remove"
    record: MappingRecord


@dataclass(eq=False)
class Subscription:
    """One events stream: what it must replay first, then a queue of live events."""

    queue: asyncio.Queue
    replay: list[Event] = field(default_factory=list)
    resync: bool = False
    overflowed: bool = False
    position: str = ""  # the store's position when subscribed: the hello event's id


_CLOSED = object()


def _stamp(path: Path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class MappingStore:
    def __init__(self, vni: int, *, hosts: str | Path | None = None, writable: bool = True,
                 reload_interval: float = 1.0, backlog: int = 1024, queue_size: int = 4096) -> None:
        self.vni = vni
        self.hosts = Path(hosts) if hosts is not None else None
        self.writable = writable
        self.reload_interval = reload_interval
        self.epoch = secrets.token_hex(4)
        self.seq = 0
        self._by_mac: dict[str, MappingRecord] = {}
        self._by_ip: dict[IPAddress, MappingRecord] = {}
        self._backlog: collections.deque[Event] = collections.deque(maxlen=backlog)
        self._subs: set[Subscription] = set()
        self._queue_size = queue_size
        self._stamp = None
        self._task: asyncio.Task | None = None

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Load the hosts file (ConfigError if it is bad) and watch it."""
        if self.hosts is None:
            return
        self._stamp = _stamp(self.hosts)
        self._set_table(await asyncio.to_thread(load_hosts, self.hosts))
        log.info("mapping-server vni=%d event=loaded hosts=%s records=%d", self.vni, self.hosts, len(self._by_mac))
        if self.reload_interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.close_streams()

    def close_streams(self) -> None:
        """End every events stream (shutdown): their handlers return, clients reconnect."""
        for sub in list(self._subs):
            self._push(sub, _CLOSED)
        self._subs.clear()

    # -- reads ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._by_mac)

    def get(self, mac: str) -> MappingRecord | None:
        return self._by_mac.get(mac)

    def by_ip(self, ip: IPAddress) -> MappingRecord | None:
        return self._by_ip.get(ip)

    def snapshot(self) -> Mapping:
        return Mapping.of(self._by_mac.values())

    # -- writes ---------------------------------------------------------------------
    def put(self, rec: MappingRecord) -> bool:
        """Add or replace `rec`; True if it is new.  Conflict if its arp/ndp belongs to another MAC."""
        if not self.writable:
            raise ReadOnly("this mapping server is read-only")
        for ip, name in ((rec.arp, "arp"), (rec.ndp, "ndp")):
            owner = self._by_ip.get(ip) if ip is not None else None
            if owner is not None and owner.mac != rec.mac:
                raise Conflict(f"field '{name}': {ip} is already claimed by {owner.mac}")
        old = self._by_mac.get(rec.mac)
        if old == rec:
            return False
        self._install(rec)
        self._publish("upsert", rec)
        return old is None

    def delete(self, mac: str) -> MappingRecord | None:
        """Remove `mac`; the removed record, or None if it was unknown."""
        if not self.writable:
            raise ReadOnly("this mapping server is read-only")
        old = self._by_mac.get(mac)
        if old is None:
            return None
        self._uninstall(old)
        self._publish("remove", old)
        return old

    def replace(self, newer: Mapping) -> None:
        """Swap in a whole table (a hosts file reload) and publish only the difference."""
        change = self.snapshot().diff(newer)
        self._set_table(newer)
        for rec in change.removed:
            self._publish("remove", rec)
        for rec in change.upserted:
            self._publish("upsert", rec)

    def _set_table(self, mapping: Mapping) -> None:
        self._by_mac = dict(mapping.by_mac)
        self._by_ip = dict(mapping.by_ip)

    def _install(self, rec: MappingRecord) -> None:
        old = self._by_mac.get(rec.mac)
        if old is not None:
            self._uninstall(old)
        self._by_mac[rec.mac] = rec
        for ip in (rec.arp, rec.ndp):
            if ip is not None:
                self._by_ip[ip] = rec

    def _uninstall(self, rec: MappingRecord) -> None:
        self._by_mac.pop(rec.mac, None)
        for ip in (rec.arp, rec.ndp):
            if ip is not None and self._by_ip.get(ip) is not None and self._by_ip[ip].mac == rec.mac:
                del self._by_ip[ip]

    # -- change feed ----------------------------------------------------------------
    @property
    def position(self) -> str:
        """The id of the newest event, `<epoch>:<seq>` (what a fresh client resumes from)."""
        return f"{self.epoch}:{self.seq}"

    def _publish(self, kind: str, rec: MappingRecord) -> None:
        self.seq += 1
        ev = Event(self.seq, kind, rec)
        self._backlog.append(ev)
        log.info("mapping-server vni=%d event=%s mac=%s seq=%d", self.vni, kind, rec.mac, ev.seq)
        for sub in list(self._subs):
            self._push(sub, ev)

    def _push(self, sub: Subscription, item: object) -> None:
        try:
            sub.queue.put_nowait(item)
        except asyncio.QueueFull:  # a client this slow is cut off; it resumes from its Last-Event-ID
            sub.overflowed = True
            self._subs.discard(sub)
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.queue.put_nowait(_CLOSED)

    def subscribe(self, last_event_id: str | None = None) -> Subscription:
        sub = Subscription(asyncio.Queue(self._queue_size), position=self.position)
        if last_event_id:
            epoch, _, seq_text = last_event_id.strip().partition(":")
            try:
                seq = int(seq_text)
            except ValueError:
                seq = -1
            oldest = self._backlog[0].seq if self._backlog else self.seq + 1
            if epoch != self.epoch or seq < 0 or seq > self.seq or seq < oldest - 1:
                sub.resync = True
            else:
                sub.replay = [ev for ev in self._backlog if ev.seq > seq]
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @staticmethod
    def is_closed(item: object) -> bool:
        return item is _CLOSED

    # -- hosts file -----------------------------------------------------------------
    async def _watch(self) -> None:
        bad = None
        while True:
            await asyncio.sleep(self.reload_interval)
            stamp = _stamp(self.hosts)
            if stamp == self._stamp:
                continue
            self._stamp = stamp
            if stamp is None:
                msg = f"{self.hosts}: file is missing; keeping the last good mapping"
            else:
                try:
                    newer = await asyncio.to_thread(load_hosts, self.hosts)
                except ConfigError as exc:
                    msg = f"{exc}; keeping the last good mapping"
                else:
                    self.replace(newer)
                    log.info("mapping-server vni=%d event=reloaded hosts=%s records=%d",
                             self.vni, self.hosts, len(self._by_mac))
                    bad = None
                    continue
            if msg != bad:
                log.error("mapping-server vni=%d event=reload-failed error=%s", self.vni, msg)
            bad = msg
