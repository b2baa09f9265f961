"""Keeping one overlay's kernel tables equal to what it wants: programming, the full pass, repair.

Three ways in, one wanted state (the mode strategy's, with the administrator's overrides):
- `program`: the strategies' own changes (mapping deltas, misses), in batches;
- `reconcile`: the full dump-and-diff pass at start, on device re-appearance, after lost
  events (ENOBUFS, coalesced by `Resync`) and every `reconcile_interval` (a safety net);
- `on_change`: a kernel event for one entry (varpd.daemon.drift), repaired in milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING, Iterable, Sequence

from varpd.daemon import flooding
from varpd.daemon.drift import DriftRepair, Resync
from varpd.daemon.memory import release_free_memory
from varpd.daemon.programmed import BULK
from varpd.daemon.reconciler import plan_async
from varpd.model.overrides import apply_overrides
from varpd.daemon import placement
from varpd.nogc import collector_paused
from varpd_kmod.types import FdbChange, FdbEntry, NeighChange, NeighEntry, OpFailure

if TYPE_CHECKING:
    from varpd.daemon.overlay import OverlayRuntime

log = logging.getLogger("varpd.daemon.overlay")


def _mac(e: FdbEntry) -> str:
    return e.mac


def _ip(e: NeighEntry):
    return e.ip


class KernelSync:
    def __init__(self, rt: "OverlayRuntime") -> None:
        self.rt = rt
        self.drift = DriftRepair(rt.name, rt._tasks, lambda: rt.tables, self.wanted_fdb, self.wanted_neigh,
                                 rt.counters, self._failed)
        self.resync = Resync(rt._tasks, self._safe_reconcile)

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
        p = await plan_async(want_fdb, want_neigh, have_fdb, have_neigh)
        await self.program(p.add_fdb, p.add_neigh, p.del_fdb, p.del_neigh, p.take_fdb)
        rt.counters["reconciles"] += 1
        if p and not adopt:
            rt.counters["reconcile_repairs"] += 1
            log.info("overlay=%s event=reconcile %s", rt.name, " ".join(f"{k}={v}" for k, v in p.summary().items()))
        elif p.take_fdb:
            log.info("overlay=%s event=adopted fdb=%d", rt.name, p.summary()["fdb_adopted"])
        if rt.mode != "push":  # push mode's origin is what it wants (OverlayRuntime._pushed)
            for e in p.add_fdb + p.take_fdb:
                rt.origin.setdefault(e.mac, rt.mode)
        if len(have_fdb) + len(have_neigh) + len(p.add_fdb) + len(p.add_neigh) > BULK:
            release_free_memory()
        return p.summary()

    async def _safe_reconcile(self) -> None:
        try:
            await self.reconcile()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep serving; the next pass tries again
            self.rt.counters["errors"] += 1
            log.error("overlay=%s event=reconcile-failed error=%s", self.rt.name, exc)

    async def loop(self) -> None:
        """The safety net: a full pass every reconcile_interval (default minutes)."""
        while True:
            await asyncio.sleep(self.rt.settings.reconcile_interval)
            self.resync.request()

    def events_lost(self) -> None:
        self.rt.counters["events_lost"] += 1
        log.warning("overlay=%s event=events-lost action=reconcile", self.rt.name)
        self.resync.request()

    # -- one entry -----------------------------------------------------------------------
    def on_change(self, ev: FdbChange | NeighChange) -> None:
        if self.rt.tables is not None and self.rt.strategy is not None:
            self.drift.on_change(ev)
