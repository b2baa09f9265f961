"""The shootdown log: what each host must forget after the mapping changed.

Portolan keeps one log per host, keyed by the host's underlay IP (the `ip` of
its LOG_REQ, the backend's `svp/underlay_ip`).  When the mapping changes from
`old` to `new`:

- VL2 record for a MAC whose destination changed or that disappeared: the host
  withdraws what it knows of that MAC and looks it up again on the next miss;
- VL3 record for an overlay IP whose owning MAC changed or that disappeared:
  the host looks the IP up again (and should announce the new owner);
- VL3 record, too, for an IP that gets an owner again within `RELEASED_FOR`
  seconds of losing one.  Guests still hold the old owner in their ARP/NDP
  caches, and the source may have folded the release and the reassignment
  into one change (a file rewritten twice between polls): either way it is a
  move and must be announced.  An IP that never had an owner gets no record, so
  growing the mapping does not make every host install and announce it.

Every underlay IP of the old or new mapping (a VTEP), and every other host that
sent a LOG_REQ within `REQUESTER_TTL`, gets its own copy of each record, with its
own 16-byte id, so LOG_RM (which carries only ids) removes exactly one host's copy.
Each log is capped; the oldest records are dropped first (logged).

The requesters that are not VTEPs are bounded, since anyone can send a LOG_REQ for
any address: at most `MAX_REQUESTERS` of them (the one heard from longest ago is
forgotten first, with its log), each forgotten with its log `REQUESTER_TTL` after
its last LOG_REQ (a client polls every 5-10 s), each log capped at
`MAX_PER_REQUESTER` records.  150k LOG_REQs from made-up addresses thus cost at
most 256 small logs, not a copy of every later record for each of them.
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
from collections.abc import Container

from varpd.model import IPAddress, Mapping, MappingChange
from varpd_plugins.svp.wire import LogRecord, LogVl2, LogVl3, record_size

log = logging.getLogger(__name__)

MAX_PER_HOST = 16384
MAX_REQUESTERS = 256  # hosts outside the mapping that get a log
MAX_PER_REQUESTER = 1024
REQUESTER_TTL = 600.0  # s without a LOG_REQ before such a host and its log are forgotten
RELEASED_FOR = 600.0  # s: longer than a guest keeps a stale ARP/NDP entry (Linux: about a minute)


def records_for(old: Mapping, new: Mapping, change: MappingChange | None = None,
                released: Container[IPAddress] = ()) -> tuple[list[str], list[IPAddress]]:
    """(MACs needing a VL2 record, IPs needing a VL3 record) for the change old → new.

    With the source's own `change` only the MACs and IPs it touches are compared (the source
    already diffed the tables); without it, the whole of both.  `released`: IPs that lost their
    owner lately; one of them owned again is a move.
    """
    if change is None:
        macs_seen, ips_seen = list(old.by_mac), list(dict.fromkeys([*old.by_ip, *new.by_ip]))
    else:
        touched = change.upserted + change.removed
        macs_seen = list(dict.fromkeys(r.mac for r in touched))
        ips = [ip for r in touched for ip in (r.arp, r.ndp)]
        ips += [ip for m in macs_seen if (r := old.by_mac.get(m)) is not None for ip in (r.arp, r.ndp)]
        ips_seen = list(dict.fromkeys(ip for ip in ips if ip is not None))
    macs = [mac for mac in macs_seen
            if (rec := old.by_mac.get(mac)) is not None
            and (mac not in new.by_mac or new.by_mac[mac].dest != rec.dest)]
    ips = []
    for ip in ips_seen:
        rec, now = old.by_ip.get(ip), new.by_ip.get(ip)
        if rec is None:
            if now is not None and ip in released:
                ips.append(ip)
        elif now is None or now.mac != rec.mac:
            ips.append(ip)
    return macs, ips


def vteps(mapping: Mapping) -> frozenset[IPAddress]:
    """The underlay IPs of `mapping`'s records: the hosts that always get a log."""
    return frozenset(rec.dest.ip for rec in mapping.by_mac.values())


class ShootdownLog:
    def __init__(self, vnetid: int, max_per_host: int = MAX_PER_HOST, *, max_requesters: int = MAX_REQUESTERS,
                 max_per_requester: int = MAX_PER_REQUESTER, requester_ttl: float = REQUESTER_TTL,
                 clock=time.monotonic) -> None:
        self.vnetid = vnetid
        self.max_per_host = max_per_host
        self.max_requesters = max_requesters
        self.max_per_requester = max_per_requester
        self.requester_ttl = requester_ttl
        self.clock = clock
        self.vteps: frozenset[IPAddress] = frozenset()  # of the mapping served now
        # requesters that are not VTEPs → when last heard from, oldest first
        self.hosts: collections.OrderedDict[IPAddress, float] = collections.OrderedDict()
        self._logs: dict[IPAddress, collections.OrderedDict[bytes, LogRecord]] = {}
        self._owner: dict[bytes, IPAddress] = {}
        self._released: collections.OrderedDict[IPAddress, float] = collections.OrderedDict()  # ip -> when
        self.dropped = 0
        self.forgotten = 0  # requesters forgotten (expired or evicted)

    def serving(self, mapping: Mapping) -> None:
        """The mapping served from now on (its VTEPs always have a log, and are no requesters)."""
        self.vteps = vteps(mapping)
        for host in self.vteps & self.hosts.keys():
            del self.hosts[host]
        self._forget_requesters()

    def seen(self, host: IPAddress) -> None:
        """`host` sent a LOG_REQ."""
        if host in self.vteps:
            return
        self.hosts[host] = self.clock()
        self.hosts.move_to_end(host)
        self._forget_requesters()

    def _forget_requesters(self) -> None:
        """Forget the requesters not heard from within requester_ttl, and the ones heard from longest
        ago beyond the cap, each with its log."""
        limit = self.clock() - self.requester_ttl
        while self.hosts:
            host, when = next(iter(self.hosts.items()))
            if when >= limit and len(self.hosts) <= self.max_requesters:
                return
            del self.hosts[host]
            self.forgotten += 1
            for rid in self._logs.pop(host, {}):
                self._owner.pop(rid, None)

    def changed(self, old: Mapping, new: Mapping, change: MappingChange | None = None) -> int:
        """Append the records of old → new (`change`: what the source says it touched) to every
        target's log; how many records were appended."""
        self._forget_released(time.monotonic() - RELEASED_FOR)
        macs, ips = records_for(old, new, change, self._released)
        for ip in ips:
            if ip in new.by_ip:
                self._released.pop(ip, None)
            else:
                self._released[ip] = time.monotonic()
                self._released.move_to_end(ip)
        self._forget_released(time.monotonic() - RELEASED_FOR)
        self.serving(new)
        if not macs and not ips:
            return 0
        targets = set(self.hosts) | vteps(old) | self.vteps
        n = 0
        for host in targets:
            for mac in macs:
                self._append(host, LogVl2(uuid.uuid4().bytes, mac, self.vnetid))
                n += 1
            for ip in ips:
                self._append(host, LogVl3(uuid.uuid4().bytes, ip, self.vnetid))
                n += 1
        log.info("svp-server vni=%d event=shootdown vl2=%d vl3=%d hosts=%d", self.vnetid, len(macs), len(ips),
                 len(targets))
        return n

    def _forget_released(self, before: float) -> None:
        """Drop released IPs older than `before`, and the oldest beyond the per-host log cap."""
        while self._released and (len(self._released) > self.max_per_host
                                  or next(iter(self._released.values())) < before):
            self._released.popitem(last=False)

    def _append(self, host: IPAddress, rec: LogRecord) -> None:
        entries = self._logs.setdefault(host, collections.OrderedDict())
        entries[rec.id] = rec
        self._owner[rec.id] = host
        cap = self.max_per_host if host in self.vteps else self.max_per_requester
        while len(entries) > cap:
            rid, _ = entries.popitem(last=False)
            self._owner.pop(rid, None)
            self.dropped += 1
            log.warning("svp-server vni=%d event=log-overflow host=%s dropped-oldest", self.vnetid, host)

    def fetch(self, host: IPAddress, max_bytes: int) -> tuple[LogRecord, ...]:
        """The oldest records of `host`'s log that fit in `max_bytes` (they stay until removed)."""
        out, used = [], 0
        for rec in self._logs.get(host, {}).values():
            size = record_size(rec)
            if used + size > max_bytes:
                break
            out.append(rec)
            used += size
        return tuple(out)

    def remove(self, ids) -> int:
        n = 0
        for rid in ids:
            host = self._owner.pop(bytes(rid), None)
            if host is not None and self._logs.get(host, {}).pop(bytes(rid), None) is not None:
                n += 1
        return n

    def pending(self, host: IPAddress) -> int:
        return len(self._logs.get(host, {}))
