"""Keeping one overlay's kernel tables equal to what it wants: programming, the full pass, repair.

Three ways in, one wanted state (the mode strategy's, with the administrator's overrides):
- `program`: the strategies' own changes (mapping deltas, misses), in batches;
- `reconcile`: the full dump-and-diff pass at start, on device re-appearance, after lost
  events (ENOBUFS, coalesced by `Resync`), on `varpd reconcile`, and whenever the safety
  pass's `check` (every `reconcile_interval`) finds the kernel different from what is wanted;
- `on_change`: a kernel event for one entry (varpd.daemon.drift), repaired in milliseconds.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from dataclasses import dataclass
from operator import attrgetter, methodcaller
from typing import TYPE_CHECKING, Iterable, Sequence

from varpd.daemon import flooding
from varpd.daemon.drift import DriftRepair, Resync
from varpd.daemon.memory import release_free_memory
from varpd.daemon.programmed import BULK
from varpd.daemon.reconciler import Adds, appended, plan_async
from varpd.model.overrides import apply_overrides
from varpd.daemon import placement
from varpd.nogc import collector_paused
from varpd_kmod.netlink import KernelTables
from varpd_kmod.tablecheck import DUMP_FDB_MAX, FDB_KEY, NEIGH_KEY, Tally, tally_of
from varpd_kmod.types import FdbChange, FdbEntry, NeighChange, NeighEntry, OpFailure

if TYPE_CHECKING:
    from varpd.daemon.overlay import OverlayRuntime

log = logging.getLogger("varpd.daemon.overlay")


def _mac(e: FdbEntry) -> str:
    return e.mac


def _ip(e: NeighEntry):
    return e.ip


_MAC_BYTES = methodcaller("replace", ":", "")
_ODD = bytes(b & 1 for b in range(256))  # bytes.translate table: 1 for a multicast first octet


@dataclass(frozen=True, slots=True)
class WantedTally:
    """What is wanted, as `check` compares it: every FDB entry, the FDB entries of MACs with one
    remote (what a GET per MAC sees) with those MACs' bytes, and the neighbour entries."""

    fdb: Tally
    fdb_single: Tally
    macs: bytes  # 6 bytes per MAC of fdb_single; only kept above DUMP_FDB_MAX (6 MB at 1M)
    neigh: Tally


class KernelSync:
    def __init__(self, rt: "OverlayRuntime") -> None:
        self.rt = rt
        self.drift = DriftRepair(rt.name, rt._tasks, lambda: rt.tables, self.wanted_fdb, self.wanted_neigh,
                                 rt.counters, self._failed)
        self.resync = Resync(rt._tasks, self._safe_reconcile)
        self._wanted_cache: tuple | None = None  # (strategy, its wanted_version and the overrides, WantedTally)

    # -- what is wanted ------------------------------------------------------------------
    def wanted(self) -> tuple[Iterable[FdbEntry], Iterable[NeighEntry]]:
        """Iterables, not lists: plan_async walks a million of them between yields (the strategy's
        state changes only under the runtime's lock, which a full pass holds)."""
        fdb, neigh = self.rt.strategy.wanted()
        if self.rt.overrides:
            fdb, neigh = apply_overrides(fdb, neigh, self.rt.overrides)
        flood = flooding.reconciled(self.rt)
        return (itertools.chain(fdb, flood) if flood else fdb), neigh

    def wanted_fdb(self, mac: str) -> Sequence[FdbEntry]:
        """`wanted()` for one MAC, without walking the whole mapping."""
        overrides = self.rt.overrides
        if mac == flooding.FLOOD_MAC:
            return flooding.last_programmed(self.rt)
        if mac in overrides:
            dest = overrides[mac]
            return () if dest is None else (FdbEntry(mac, dest.ip, dest.port),)
        return self.rt.strategy.want_fdb(mac)

    def wanted_neigh(self, ip) -> NeighEntry | None:
        n = self.rt.strategy.want_neigh(ip)
        if n is not None and n.mac in self.rt.overrides and self.rt.overrides[n.mac] is None:
            return None  # its MAC is dropped by hand
        return n

    # -- programming ---------------------------------------------------------------------
    async def program(self, add_fdb=(), add_neigh=(), del_fdb=(), del_neigh=(), take_fdb=()) -> None:
        """Apply changes in batches; the FDB goes before neighbours so a proxied ARP never points nowhere."""
        rt = self.rt
        t = rt.tables
        if t is None:
            return  # the namespace is gone: the first reconcile in the new one programs everything
        failures: list[OpFailure] = []
        now = time.monotonic()
        for entries, call, kind, key in ((take_fdb, "take_fdb", "fdb", _mac), (add_fdb, "add_fdb", "fdb", _mac),
                                         (add_neigh, "add_neigh", "neigh", _ip)):
            if entries:
                failures += await getattr(t, call)(entries)
                rt.counters[f"{kind}_programmed"] += len(entries)
                rt.programmed_at.stamp((key(e) for e in entries), len(entries), now)
        if del_neigh:
            failures += await t.del_neigh(del_neigh)
            rt.counters["neigh_removed"] += len(del_neigh)
        if del_fdb:
            failures += await t.del_fdb(del_fdb)
            rt.counters["fdb_removed"] += len(del_fdb)
        self._failed(failures)

    def _failed(self, failures: list[OpFailure]) -> None:
        for f in failures:
            self.rt.counters["program_errors"] += 1
            log.error("overlay=%s event=program-failed entry=%s errno=%d error=%s",
                      self.rt.name, f.entry, f.errno, f.message)

    # -- the full pass ---------------------------------------------------------------------
    async def reconcile(self, *, adopt: bool = False) -> dict[str, int]:
        """Make the kernel equal to what is wanted; `adopt` re-validates entries found at start.
        Only entries carrying varpd's mark are removed (varpd.daemon.reconciler)."""
        rt = self.rt
        async with rt._lock:
            with collector_paused():  # 1M dumped entries: a collection would stall the loop for ~1 s
                return await self._reconcile(adopt)

    async def _reconcile(self, adopt: bool) -> dict[str, int]:
        rt = self.rt
        if not await placement.check(rt):  # re-makes a device that is gone; False: no namespace
            return {}
        have_fdb = await rt.tables.dump_fdb()
        have_neigh = await rt.tables.dump_neigh()
        await rt.strategy.before_reconcile(have_fdb, have_neigh, adopt=adopt)
        want_fdb, want_neigh = self.wanted()
        streamed: collections.Counter[str] = collections.Counter()

        async def program_now(adds: Adds) -> None:  # a start's million adds, a batch at a time
            await self.program(adds.add_fdb, adds.add_neigh, take_fdb=adds.take_fdb)
            self._origins(adds.add_fdb, adds.take_fdb)
            streamed.update(fdb_added=len(adds.add_fdb) + len(adds.take_fdb), neigh_added=len(adds.add_neigh),
                            fdb_adopted=len({e.mac for e in adds.take_fdb}))

        p = await plan_async(want_fdb, want_neigh, have_fdb, have_neigh, program=program_now)
        await self.program(p.add_fdb, p.add_neigh, p.del_fdb, p.del_neigh, p.take_fdb)
        self._origins(p.add_fdb, p.take_fdb)
        summary = p.summary()
        summary.update({k: summary[k] + v for k, v in streamed.items()})
        rt.counters["reconciles"] += 1
        if (p or streamed["fdb_added"] or streamed["neigh_added"]) and not adopt:
            rt.counters["reconcile_repairs"] += 1
            log.info("overlay=%s event=reconcile %s", rt.name, " ".join(f"{k}={v}" for k, v in summary.items()))
        elif summary["fdb_adopted"]:
            log.info("overlay=%s event=adopted fdb=%d", rt.name, summary["fdb_adopted"])
        if len(have_fdb) + len(have_neigh) + summary["fdb_added"] + summary["neigh_added"] > BULK:
            release_free_memory()
        return summary

    def _origins(self, *added) -> None:
        rt = self.rt
        if rt.mode != "push":  # push mode's origin is what it wants (OverlayRuntime._pushed)
            for entries in added:
                for e in entries:
                    rt.origin.setdefault(e.mac, rt.mode)

    async def _safe_reconcile(self) -> None:
        try:
            await self.reconcile()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep serving; the next pass tries again
            self.rt.counters["errors"] += 1
            log.error("overlay=%s event=reconcile-failed error=%s", self.rt.name, exc)

    async def loop(self) -> None:
        """The safety net: every reconcile_interval (default minutes), a check, and a full pass
        if it finds the kernel differs."""
        while True:
            await asyncio.sleep(self.rt.settings.reconcile_interval)
            await self.safety_pass()

    # -- the safety pass -------------------------------------------------------------------
    async def safety_pass(self) -> None:
        """`check`, then the full pass unless it found the kernel as wanted.  Kernel events repair
        drift in milliseconds; this finds what no event announced, at a fraction of a full pass's
        cost (1M records: 3M entries in ~5 s of CPU against ~120 s)."""
        if self.resync.busy:
            return  # a full pass is under way: it is the check
        try:
            same = await self.check()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed check is a difference: the full pass decides
            log.warning("overlay=%s event=check-failed error=%s action=reconcile", self.rt.name, exc)
            same = False
        if same:
            self.rt.counters["checks"] += 1
            return
        if same is False:
            self.rt.counters["check_differences"] += 1
            log.info("overlay=%s event=check-differs action=reconcile", self.rt.name)
        self.resync.request()

    async def check(self) -> bool | None:
        """Do the kernel's tables hold exactly what a full pass would leave?  None: this overlay
        cannot be checked this way (its mode refreshes what it wants in the full pass itself
        (on-demand, point), or its tables are a flooding pair).

        Both sides are reduced to tallies (varpd_kmod.tablecheck); what is wanted is counted
        again only when the mode's `wanted_version` or the overrides changed.  The kernel is
        read on a socket of the check's own, outside the runtime's lock: drift repairs and
        mapping changes go on meanwhile (one that lands between the two reads makes the check
        differ, and the full pass follows).  Above DUMP_FDB_MAX wanted entries the FDB is read
        by one GET per wanted MAC: an extra entry (a MAC varpd does not want carrying its mark,
        a second remote appended to a wanted MAC) is then not seen here; their kernel events
        and the full passes at start, on device re-appearance and after ENOBUFS see them."""
        rt = self.rt
        tables = rt.tables
        version = rt.strategy.wanted_version() if rt.strategy is not None else None
        if version is None or type(tables) is not KernelTables or tables.closed:
            return None
        async with rt._lock:
            want = await self._wanted_tally(version)
        async with tables.checker() as c:
            if want.fdb.count <= DUMP_FDB_MAX:
                have_f, expect_f = await c.fdb_dump(), want.fdb
            else:
                have_f, expect_f = await c.fdb_get(want.macs), want.fdb_single
            have_n = await c.neigh_dump()
        if have_f.missing or not have_f.same(expect_f) or not have_n.same(want.neigh):
            return False
        # someone else's entries survive a full pass unless varpd wants their key
        return not any(self.wanted_fdb(m) for m in have_f.foreign) and \
            not any(self.wanted_neigh(ip) is not None for ip in have_n.foreign)

    async def _wanted_tally(self, version) -> WantedTally:
        rt = self.rt
        key = (version, tuple(rt.overrides.items()))
        cached = self._wanted_cache
        if cached is not None and cached[0] is rt.strategy and cached[1] == key:
            return cached[2]
        fdb, neigh = rt.strategy.wanted()
        if rt.overrides:
            fdb, neigh = apply_overrides(fdb, neigh, rt.overrides)
        every, single, macs = Tally(), Tally(), bytearray()
        it = iter(fdb)
        while chunk := list(itertools.islice(it, 4096)):
            hashes = list(map(hash, map(FDB_KEY, chunk)))
            every.add(hashes)
            raw = b"".join(map(bytes.fromhex, map(_MAC_BYTES, map(attrgetter("mac"), chunk))))
            if raw[0::6].translate(_ODD).count(1) or any(e.mac == flooding.FLOOD_MAC for e in chunk):
                keep = [not appended(e.mac) for e in chunk]  # the flood list or a multicast MAC
                hashes = [h for h, k in zip(hashes, keep) if k]
                raw = b"".join(raw[6 * i:6 * i + 6] for i, k in enumerate(keep) if k)
            single.add(hashes)
            macs += raw
            await asyncio.sleep(0)
        want = WantedTally(every, single, bytes(macs) if every.count > DUMP_FDB_MAX else b"",
                           await tally_of(neigh, NEIGH_KEY))
        self._wanted_cache = (rt.strategy, key, want)
        return want

    def events_lost(self) -> None:
        self.rt.counters["events_lost"] += 1
        log.warning("overlay=%s event=events-lost action=reconcile", self.rt.name)
        self.resync.request()

    # -- one entry -----------------------------------------------------------------------
    def on_change(self, ev: FdbChange | NeighChange) -> None:
        if self.rt.tables is not None and self.rt.strategy is not None:
            self.drift.on_change(ev)
