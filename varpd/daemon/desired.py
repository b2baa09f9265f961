"""Which kernel entries a mapping record asks for on this host.

A record whose destination is this host's own VTEP is a local VNIC: it is
reached through the bridge and never programmed (programming its neighbour
entries would make the kernel proxy answer a guest's own DAD probe).

DesiredState holds the backend's own snapshot (an immutable Mapping) and no copy
of it: what is wanted is every record of that table with a remote VTEP of our
family, and FdbEntry/NeighEntry values are made only when asked.  Keeping a
table of its own cost 120 MB per million records (before: 290 MB of entries).

It also counts the records behind each destination, kept as changes are applied, so
the flood list (`remote_vteps`) costs the VTEPs, not the records: recomputed from the
wanted entries it walked a million records on every mapping change (5 s on this VM).
The first count of a loaded table runs in slices (`count`, before the first pass).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping as AbcMapping
from dataclasses import dataclass, field

from varpd.model import Destination, Mapping, MappingChange, MappingRecord
from varpd_kmod.types import FdbEntry, NeighEntry


def is_local(rec: MappingRecord, local: Destination) -> bool:
    return rec.dest.ip == local.ip


def fdb_for(mac: str, dest: Destination) -> FdbEntry:
    return FdbEntry(mac=mac, dst=dest.ip, port=dest.port)


def neighs_for(rec: MappingRecord) -> list[NeighEntry]:
    return [NeighEntry(ip=ip, mac=rec.mac) for ip in (rec.arp, rec.ndp) if ip is not None]


class _View(AbcMapping):
    __slots__ = ("_state",)

    def __init__(self, state: "DesiredState") -> None:
        self._state = state

    def __len__(self) -> int:
        return sum(1 for _ in self)


class FdbView(_View):
    """MAC → the FdbEntry the kernel should hold."""

    def __getitem__(self, mac: str) -> FdbEntry:
        rec = self._state.mapping.by_mac[mac]
        if not self._state.usable(rec):
            raise KeyError(mac)
        return fdb_for(mac, rec.dest)

    def __iter__(self) -> Iterator[str]:
        usable = self._state.usable
        return (mac for mac, rec in self._state.mapping.by_mac.items() if usable(rec))

    def values(self) -> Iterator[FdbEntry]:  # type: ignore[override]
        usable = self._state.usable
        return (FdbEntry(rec.mac, rec.dest.ip, rec.dest.port)
                for rec in self._state.mapping.by_mac.values() if usable(rec))


class NeighView(_View):
    """Overlay IP → the NeighEntry the kernel should hold (drift repair asks once per kernel event)."""

    def __getitem__(self, ip) -> NeighEntry:
        rec = self._state.mapping.by_ip.get(ip)
        if rec is None or not self._state.usable(rec):
            raise KeyError(ip)
        return NeighEntry(ip, rec.mac)

    def __iter__(self) -> Iterator:
        return (n.ip for n in self.values())

    def values(self) -> Iterator[NeighEntry]:  # type: ignore[override]
        usable = self._state.usable
        for rec in self._state.mapping.by_mac.values():
            if usable(rec):
                if rec.arp_int is not None:
                    yield NeighEntry(rec.arp, rec.mac)
                if rec.ndp_int is not None:
                    yield NeighEntry(rec.ndp, rec.mac)


def _applied(mapping: Mapping, change: MappingChange) -> Mapping:
    """`mapping` with `change` applied: the table a backend would give after it (O(n))."""
    by_mac = dict(mapping.by_mac)
    for rec in change.removed:
        by_mac.pop(rec.mac, None)
    for rec in change.upserted:
        by_mac[rec.mac] = rec
    return Mapping.of(by_mac.values())


COUNT_SLICE = 0.002  # s of counting between two turns of the loop (reconciler.SLICE's reason)


def _one_more(dests: dict[int, list], dest: Destination) -> None:
    slot = dests.get(id(dest))
    if slot is None:
        dests[id(dest)] = [dest, 1]
    else:
        slot[1] += 1


@dataclass(slots=True)
class DesiredState:
    """The entries the kernel should hold: those of the backend's table that are remote and of our family."""

    local: Destination
    mapping: Mapping = field(default_factory=Mapping)
    # id(destination) → [that Destination, records of `mapping` behind it] (None: not counted
    # yet): keyed by identity, since records share one interned object per VTEP and hashing
    # a Destination (its address's Python __hash__) cost 2.4 s per million where id costs 0.3
    _dests: dict[int, list] | None = None
    _skipped: int = 0  # records whose underlay family differs from the VTEP's

    @property
    def fdb(self) -> FdbView:
        return FdbView(self)

    @property
    def neigh(self) -> NeighView:
        return NeighView(self)

    @property
    def skipped(self) -> int:
        self._count_now()
        return self._skipped

    def usable(self, rec: MappingRecord) -> bool:
        return self._usable(rec.dest)

    def _usable(self, dest: Destination) -> bool:
        ip = dest.ip
        return ip != self.local.ip and ip.version == self.local.ip.version

    def load(self, mapping: Mapping) -> None:
        """O(1): the records are counted later (`count`), in slices."""
        self.mapping = mapping
        self._dests = None

    @property
    def counted(self) -> bool:
        return self._dests is not None

    async def count(self) -> bool:
        """Count the loaded table's records per destination, giving the loop a turn every
        COUNT_SLICE s; False when counted already.  Run where no change can be applied meanwhile
        (push mode: before the first pass, under the runtime's lock)."""
        if self._dests is not None:
            return False
        dests: dict[int, list] = {}
        started = time.perf_counter()
        for _ in self._count_steps(dests):
            if time.perf_counter() - started > COUNT_SLICE:
                await asyncio.sleep(0)
                started = time.perf_counter()
        self._counted(dests)
        return True

    def _count_now(self) -> None:
        """`count` at once, for a caller that asks before the first pass."""
        if self._dests is None:
            dests: dict[int, list] = {}
            for _ in self._count_steps(dests):
                pass
            self._counted(dests)

    def _count_steps(self, dests: dict[int, list]) -> Iterator[None]:
        for n, rec in enumerate(self.mapping.by_mac.values()):
            _one_more(dests, rec.dest)
            if n & 1023 == 1023:
                yield

    def _counted(self, dests: dict[int, list]) -> None:
        self._dests = dests
        version = self.local.ip.version
        self._skipped = sum(n for d, n in dests.values() if d.ip.version != version)

    def remote_vteps(self) -> set[Destination]:
        """Every destination a wanted entry goes to (remote, of our family): O(VTEPs)."""
        self._count_now()
        return {d for d, _ in self._dests.values() if self._usable(d)}

    def _recount(self, old: Mapping, new: Mapping, change: MappingChange) -> None:
        dests = self._dests
        if dests is None:
            return  # counted from the newest table when first asked
        for mac in {rec.mac for part in (change.removed, change.upserted) for rec in part}:
            was, now = old.by_mac.get(mac), new.by_mac.get(mac)
            if was is not None and (now is None or was.dest is not now.dest):
                slot = dests[id(was.dest)]
                slot[1] -= 1
                if not slot[1]:
                    del dests[id(was.dest)]
            if now is not None and (was is None or was.dest is not now.dest):
                _one_more(dests, now.dest)

    def apply(self, change: MappingChange, newer: Mapping | None = None) -> tuple[list, list, list, list]:
        """Move to `newer` (the backend's table right after `change`; computed when not given) and
        return (add_fdb, add_neigh, del_fdb, del_neigh) to program."""
        old = self.mapping
        add_f: list[FdbEntry] = []
        add_n: list[NeighEntry] = []
        del_f: list[FdbEntry] = []
        del_n: list[NeighEntry] = []
        for rec in change.removed:
            was = old.by_mac.get(rec.mac)
            if was is not None and self.usable(was):
                del_f.append(fdb_for(was.mac, was.dest))
                del_n += neighs_for(was)
        for rec in change.upserted:
            was = old.by_mac.get(rec.mac)
            wanted = self.usable(rec)
            if rec.dest.ip.version != self.local.ip.version:
                self._skipped += 1
            if wanted:
                add_f.append(fdb_for(rec.mac, rec.dest))
                add_n += neighs_for(rec)
            if was is not None and self.usable(was):
                kept = {n.ip for n in neighs_for(rec)} if wanted else set()
                del_n += [n for n in neighs_for(was) if n.ip not in kept]
                if not wanted:  # became local or unusable
                    del_f.append(fdb_for(was.mac, was.dest))
        # an IP moved to another MAC is an add (replace), not a delete
        added = {n.ip for n in add_n}
        del_n = [e for e in del_n if e.ip not in added]
        self.mapping = newer if newer is not None else _applied(old, change)
        self._recount(old, self.mapping, change)
        return add_f, add_n, del_f, del_n
