"""Desired state versus kernel state: compute the smallest set of changes.

Pure logic; the overlay runtime feeds it dumps from kmod-shim and applies the
plan with batched netlink.  Entries still wanted are never touched, so a
reconcile (at start, after ENOBUFS, periodically) never disturbs traffic.

Ownership: a dump says which kernel entries carry varpd's mark
(varpd_kmod.netlink.fdb_owned / neigh_owned).  Only marked entries are ever
removed; an entry someone else added for a key varpd does not want survives.
A key varpd wants is varpd's: an unmarked entry there is taken over (an older
varpd's entry is adopted this way, once: afterwards it carries the mark).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Generator, Iterable, Mapping

from varpd_kmod.types import FdbEntry, NeighEntry

# plan_async gives the loop a turn once SLICE seconds of planning have run: the loop serves
# misses and admin requests between slices (a request takes several turns, each waits a slice)
SLICE = 0.002
BATCH = 256  # entries between two looks at the clock
# plan_async(program=...) hands adds over in batches of this many as it finds them: a start over
# 1M records held 3M FdbEntry/NeighEntry (and their address objects) at once, +300 MB, which left
# the heap fragmented after; more than varpd.daemon.programmed.BULK, so a batch is stamped as one
STREAM = 16384
FLOOD_MAC = "00:00:00:00:00:00"  # the VXLAN default destination: broadcast, multicast, unknown unicast


def _dest_key(e: FdbEntry) -> tuple:
    return e.dst.version, e.dst, e.port


def appended(mac: str) -> bool:
    """All-zeros and multicast MACs hold a list of remotes (appended: the kernel refuses a
    replace), compared as a set of whole entries; any other MAC has one remote."""
    return mac == FLOOD_MAC or int(mac[:2], 16) & 1 == 1


@dataclass(frozen=True, slots=True)
class Plan:
    add_fdb: tuple[FdbEntry, ...] = ()
    del_fdb: tuple[FdbEntry, ...] = ()
    add_neigh: tuple[NeighEntry, ...] = ()
    del_neigh: tuple[NeighEntry, ...] = ()
    # wanted entries whose MAC the kernel holds unmarked: deleted and added again with the mark
    # (KernelTables.take_fdb), since the VXLAN driver does not re-mark an entry on replace
    take_fdb: tuple[FdbEntry, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add_fdb or self.del_fdb or self.add_neigh or self.del_neigh or self.take_fdb)

    def summary(self) -> dict[str, int]:
        return {
            "fdb_added": len(self.add_fdb) + len(self.take_fdb),
            "fdb_removed": len(self.del_fdb),
            "neigh_added": len(self.add_neigh),
            "neigh_removed": len(self.del_neigh),
            "fdb_adopted": len({e.mac for e in self.take_fdb}),
        }


def plan(
    want_fdb: Iterable[FdbEntry],
    want_neigh: Iterable[NeighEntry],
    have_fdb: Mapping[FdbEntry, bool],
    have_neigh: Mapping[NeighEntry, bool],
) -> Plan:
    """Adds (with replace) for missing, different or unmarked entries; deletes for marked entries
    not wanted at all.  `have_*` map each kernel entry to whether it carries varpd's mark.

    FDB entries are keyed by MAC, neighbour entries by IP: a changed destination is one
    replace, never a delete followed by an add.  The all-zeros MAC is the flood list:
    several entries that differ by destination (appended), compared as a set of whole
    entries, so a wanted extra VTEP is appended and a gone one deleted alone.
    """
    steps = _plan(want_fdb, want_neigh, have_fdb, have_neigh)
    for _ in steps:
        pass
    return steps.result


@dataclass(frozen=True, slots=True)
class Adds:
    """Adds `plan_async` found so far, to program now (FDB before the neighbours: every FDB add,
    take included, comes before the first neighbour batch)."""

    add_fdb: tuple[FdbEntry, ...] = ()
    add_neigh: tuple[NeighEntry, ...] = ()
    take_fdb: tuple[FdbEntry, ...] = ()


async def plan_async(
    want_fdb: Iterable[FdbEntry],
    want_neigh: Iterable[NeighEntry],
    have_fdb: Mapping[FdbEntry, bool],
    have_neigh: Mapping[NeighEntry, bool],
    program: Callable[[Adds], Awaitable[None]] | None = None,
) -> Plan:
    """`plan`, giving the event loop a turn every SLICE seconds (1M entries take seconds).  With
    `program`, adds are handed to it in batches of STREAM as they are found and the Plan holds
    only the rest (and every delete)."""
    steps = _plan(want_fdb, want_neigh, have_fdb, have_neigh, stream=program is not None)
    started = time.perf_counter()
    for adds in steps:
        if adds is not None:
            await program(adds)
            started = time.perf_counter()
        elif time.perf_counter() - started > SLICE:
            await asyncio.sleep(0)
            started = time.perf_counter()
    return steps.result


class _Steps:
    """Iterate a generator to its end and keep what it returned."""

    def __init__(self, gen: Generator[None, None, Plan]) -> None:
        self._gen = gen
        self.result: Plan | None = None

    def __iter__(self):
        self.result = yield from self._gen


def _plan(want_fdb, want_neigh, have_fdb, have_neigh, stream: bool = False) -> _Steps:
    return _Steps(_plan_steps(want_fdb, want_neigh, have_fdb, have_neigh, stream))


def _plan_steps(want_fdb, want_neigh, have_fdb, have_neigh, stream: bool = False) -> Generator[Adds | None, None, Plan]:
    """One walk over the kernel's entries (indexed by key), one over the wanted ones, consumed as
    they come: a wanted entry is kept only when it must be programmed, and a kernel entry left in
    the index once every wanted one has passed is not wanted.  A million wanted entries are never
    all held at once (the indexes of both sides, with a list per MAC, cost 400 MB at 1M)."""
    n = 0
    have_f: dict[str, FdbEntry] = {}  # MAC → its one kernel entry
    have_many: dict[str, list[FdbEntry]] = {}  # MACs with several (appended MACs, or someone's extras)
    foreign: set[str] = set()  # MACs whose kernel entry is not varpd's (the mark is per MAC)
    for e, owned in have_fdb.items():
        mac = e.mac
        if mac in have_many:
            have_many[mac].append(e)
        elif mac in have_f:
            have_many[mac] = [have_f.pop(mac), e]
        elif appended(mac):
            have_many[mac] = [e]
        else:
            have_f[mac] = e
        if not owned:
            foreign.add(mac)
        n += 1
        if n % BATCH == 0:
            yield
    add_fdb: list[FdbEntry] = []
    del_fdb: list[FdbEntry] = []
    take_fdb: list[FdbEntry] = []
    want_many: dict[str, list[FdbEntry]] = {}  # appended MACs: compared as sets once all are in
    for e in want_fdb:
        mac = e.mac
        if appended(mac):
            want_many.setdefault(mac, []).append(e)
        else:
            kernel = have_f.pop(mac, None)
            extras = have_many.pop(mac, None) if kernel is None else None
            if kernel is None and extras is None:
                add_fdb.append(e)
            elif mac in foreign:
                take_fdb.append(e)
            elif extras is not None:  # one remote: extras appended by someone go
                add_fdb.append(e)
                del_fdb += [k for k in extras if k != e]
            elif kernel != e:
                add_fdb.append(e)  # the add replaces the different one
        n += 1
        if n % BATCH == 0:
            if stream and len(add_fdb) >= STREAM:
                yield Adds(add_fdb=tuple(add_fdb))
                add_fdb.clear()
            yield
    for mac, wants in want_many.items():
        kernel = have_many.pop(mac, None)
        if kernel is None:
            add_fdb += wants
        elif mac in foreign:
            take_fdb += wants
        else:
            add_fdb += sorted(set(wants) - set(kernel), key=_dest_key)
            del_fdb += sorted(set(kernel) - set(wants), key=_dest_key)
    del_fdb += [e for mac, e in have_f.items() if mac not in foreign]
    del_fdb += [e for mac, kernel in have_many.items() if mac not in foreign for e in kernel]
    if stream and (add_fdb or take_fdb):
        yield Adds(add_fdb=tuple(add_fdb), take_fdb=tuple(take_fdb))
        add_fdb, take_fdb = [], []
    have_n: dict[object, NeighEntry] = {}
    for e in have_neigh:
        have_n[e.ip] = e
        n += 1
        if n % BATCH == 0:
            yield
    add_neigh: list[NeighEntry] = []
    for e in want_neigh:
        kernel = have_n.pop(e.ip, None)
        if kernel is None or kernel != e or not have_neigh[kernel]:
            add_neigh.append(e)  # a replace: sets the lladdr and the mark
        n += 1
        if n % BATCH == 0:
            if stream and len(add_neigh) >= STREAM:
                yield Adds(add_neigh=tuple(add_neigh))
                add_neigh.clear()
            yield
    del_neigh = [e for e in have_n.values() if have_neigh[e]]
    return Plan(tuple(add_fdb), tuple(del_fdb), tuple(add_neigh), tuple(del_neigh), tuple(take_fdb))
