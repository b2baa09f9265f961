"""on-demand: entries are programmed when the kernel reports a miss (illumos varpd's model), through
the runtime's cache with negative caching and a per-destination rate limit; what was installed is
looked up again once older than the cache TTL, and a restart adopts what the backend still confirms."""

from __future__ import annotations

import time
from typing import Any

from varpd.daemon.desired import fdb_for, neighs_for
from varpd.daemon.modes.base import ModeStrategy
from varpd.model import Mapping, MappingChange
from varpd.model.addresses import check_overlay_ip, mac_problem
from varpd_kmod.types import FdbEntry, L2Miss, L3Miss, NeighEntry


class OnDemandMode(ModeStrategy):
    name = "on-demand"

    def __init__(self, rt) -> None:
        super().__init__(rt)
        # what misses programmed, and when (to re-validate after the cache TTL)
        self.installed_fdb: dict[str, FdbEntry] = {}
        self.installed_neigh: dict[Any, NeighEntry] = {}
        self.installed_at: dict[Any, float] = {}
        self._adopted = False

    def wanted(self):
        return self.installed_fdb.values(), self.installed_neigh.values()

    def want_fdb(self, mac: str):
        e = self.installed_fdb.get(mac)
        return () if e is None else (e,)

    def want_neigh(self, ip):
        return self.installed_neigh.get(ip)

    def installed(self) -> tuple[int, int]:
        return len(self.installed_fdb), len(self.installed_neigh)

    def forget(self, mac: str) -> None:
        self.installed_fdb.pop(mac, None)
        for ip in [ip for ip, n in self.installed_neigh.items() if n.mac == mac]:
            del self.installed_neigh[ip]
            self.rt.cache.invalidate(ip)

    def clear(self) -> None:
        self.installed_fdb.clear()
        self.installed_neigh.clear()

    async def before_reconcile(self, have_fdb: dict[FdbEntry, bool], have_neigh: dict[NeighEntry, bool], *, adopt: bool) -> None:
        if adopt and not self._adopted:
            await self._adopt(have_fdb, have_neigh)
        await self._revalidate()

    async def _adopt(self, have_fdb: dict[FdbEntry, bool], have_neigh: dict[NeighEntry, bool]) -> None:
        """After a restart, keep the kernel's entries that the backend still confirms."""
        self._adopted = True
        rt = self.rt
        now = time.monotonic()
        for e in have_fdb:
            dest = await rt._lookup_mac(e.mac, force=True)
            if dest is not None and fdb_for(e.mac, dest) == e:
                self.installed_fdb[e.mac] = e
                self.installed_at[e.mac] = now
        for n in have_neigh:
            mac = await rt._lookup_ip(n.ip, force=True)
            if mac == n.mac and mac in self.installed_fdb:
                self.installed_neigh[n.ip] = n
                self.installed_at[n.ip] = now

    async def _revalidate(self) -> None:
        """Entries older than the cache TTL are looked up again; changed ones are fixed, gone ones dropped."""
        rt = self.rt
        limit = time.monotonic() - rt.settings.cache_ttl
        for mac in [m for m in self.installed_fdb if self.installed_at.get(m, 0) < limit]:
            dest = await rt._lookup_mac(mac, force=True)
            if dest is None or dest.ip == rt.local.ip:
                self.installed_fdb.pop(mac, None)
            else:
                self.installed_fdb[mac] = fdb_for(mac, dest)
            self.installed_at[mac] = time.monotonic()
        for ip in [i for i in self.installed_neigh if self.installed_at.get(i, 0) < limit]:
            mac = await rt._lookup_ip(ip, force=True)
            if mac is None or mac not in self.installed_fdb:
                self.installed_neigh.pop(ip, None)
            else:
                self.installed_neigh[ip] = NeighEntry(ip, mac)
            self.installed_at[ip] = time.monotonic()

    async def apply_change(self, change: MappingChange, snapshot: Mapping | None = None) -> None:
        """Withdraw or update only what misses installed; an overlay IP that local guests resolved and
        that now belongs to another MAC is reprogrammed and announced at once (svp's VL3 shootdown):
        the guests' ARP/NDP caches would otherwise keep sending to the old owner until they expire."""
        rt = self.rt
        del_f, del_n, add_f, add_n = [], [], [], []
        resolved_before = dict(self.installed_neigh)
        for rec in change.removed + change.upserted:
            rt.cache.invalidate(rec.mac)
            for ip in (rec.arp, rec.ndp):
                if ip is not None:
                    rt.cache.invalidate(ip)
        for rec in change.removed:
            if (e := self.installed_fdb.pop(rec.mac, None)) is not None:
                del_f.append(e)
            for n in neighs_for(rec):
                if self.installed_neigh.get(n.ip) == n:
                    del_n.append(self.installed_neigh.pop(n.ip))
        for rec in change.upserted:
            taken_over = any((n.ip in resolved_before and resolved_before[n.ip].mac != rec.mac)
                             or n.ip in change.moved_ips for n in neighs_for(rec))
            if rec.mac in self.installed_fdb or (taken_over and rec.dest.ip != rt.local.ip):
                if rec.dest.ip == rt.local.ip:
                    del_f.append(self.installed_fdb.pop(rec.mac))
                elif self.installed_fdb.get(rec.mac) != (e := fdb_for(rec.mac, rec.dest)):
                    self.installed_fdb[rec.mac] = e
                    add_f.append(e)
            wanted = {n.ip: n for n in neighs_for(rec)} if rec.mac in self.installed_fdb else {}
            for ip, n in list(self.installed_neigh.items()):
                if n.mac == rec.mac and ip not in wanted:
                    del_n.append(self.installed_neigh.pop(ip))
            for ip, n in wanted.items():
                if ((ip in self.installed_neigh or ip in resolved_before or ip in change.moved_ips)
                        and self.installed_neigh.get(ip) != n):
                    del_n[:] = [d for d in del_n if d.ip != ip]  # deleted after adds, by IP: keep the new one
                    self.installed_neigh[ip] = n
                    add_n.append(n)
        await rt._program(add_f, add_n, del_f, del_n)
        now = time.monotonic()  # programmed by this overlay on demand, as a miss would: show-overlay -t says so
        for key in [e.mac for e in add_f] + [n.ip for n in add_n]:
            rt.origin[key], self.installed_at[key] = "on-demand", now
        await rt._announce(add_n)

    async def on_miss(self, ev: L2Miss | L3Miss) -> None:
        if isinstance(ev, L2Miss):
            await self.resolve_mac(ev.mac)
        else:
            await self.resolve_ip(ev.ip)

    async def resolve_mac(self, mac: str) -> FdbEntry | None:
        rt = self.rt
        if mac in rt.overrides:  # programmed by reconcile; a drop is never answered
            dest = rt.overrides[mac]
            return None if dest is None else fdb_for(mac, dest)
        if mac in self.installed_fdb:
            return self.installed_fdb[mac]
        if mac_problem(mac) is not None:  # no backend holds a group or all-zeros MAC: never ask it
            rt.counters["misses_not_vnic"] += 1
            return None
        dest = await rt._lookup_mac(mac)
        if dest is None or dest.ip == rt.local.ip or dest.ip.version != rt.local.ip.version:
            rt.counters["misses_unanswered"] += 1
            return None
        entry = fdb_for(mac, dest)
        await self._install(self.installed_fdb, mac, entry, add_fdb=[entry])
        return entry

    async def resolve_ip(self, ip) -> None:
        rt = self.rt
        if ip in self.installed_neigh:
            return
        try:
            check_overlay_ip(ip)
        except ValueError:  # a multicast, broadcast or unspecified target is nobody's address
            rt.counters["misses_not_vnic"] += 1
            return
        mac = await rt._lookup_ip(ip)
        if mac is None:
            rt.counters["misses_unanswered"] += 1
            return
        if await self.resolve_mac(mac) is None:
            return
        entry = NeighEntry(ip, mac)
        await self._install(self.installed_neigh, ip, entry, add_neigh=[entry])

    async def _install(self, table: dict, key, entry, **program) -> None:
        """What a miss resolved: recorded (to re-validate after the cache TTL) and programmed, under
        the runtime's lock like every change of the kernel tables."""
        rt = self.rt
        async with rt._lock:
            table[key] = entry
            self.installed_at[key] = time.monotonic()
            rt.origin[key] = "on-demand"
            await rt._program(**program)
