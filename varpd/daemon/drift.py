"""Drift repair: an entry someone else deletes or changes is put back within milliseconds.

The kernel announces every FDB and neighbour change of varpd's devices on the
daemon's one neighbour socket (varpd_kmod.misses, demultiplexed by ifindex in
varpd.daemon.service).  Each change is compared with what the overlay wants
for that one key: varpd's own programming comes back as events that match the
wanted state (or carry its mark) and is ignored, so repairs never feed back.
What differs is reprogrammed from the wanted state as it is when the batch is
sent, not as it was when the event came, so a repair never undoes a newer
mapping change.  Lost events (ENOBUFS) and everything else go to the full
dump-and-diff pass (`Resync`), which runs at start, on device re-appearance,
after ENOBUFS and when the safety pass every `reconcile_interval` finds the
kernel differs (KernelSync.safety_pass).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Iterator, Sequence

from varpd.tasks import TaskSet
from varpd_kmod.netlink import KernelTables
from varpd_kmod.types import FdbChange, FdbEntry, NeighChange, NeighEntry, OpFailure

log = logging.getLogger(__name__)

WantedFdb = Callable[[str], Sequence[FdbEntry]]
WantedNeigh = Callable[[object], "NeighEntry | None"]


class DriftRepair:
    """One overlay's event-driven repair.  `on_change` is cheap and synchronous (it runs in the
    listener's loop for every event); the netlink work is batched into one task at a time."""

    def __init__(self, name: str, tasks: TaskSet, tables: Callable[[], KernelTables | None], wanted_fdb: WantedFdb,
                 wanted_neigh: WantedNeigh, counters, on_failures: Callable[[list[OpFailure]], None]) -> None:
        self.name = name
        self._tables = tables
        self._wanted_fdb = wanted_fdb
        self._wanted_neigh = wanted_neigh
        self._counters = counters
        self._on_failures = on_failures
        self._fdb: set[str] = set()  # MACs to program again (replace / append)
        self._take: set[str] = set()  # MACs someone else's entry holds: deleted and re-added marked
        self._neigh: set[object] = set()  # IPs to program again
        self._running: asyncio.Task | None = None
        self._tasks = tasks  # the overlay's: failures reported, cancelled on stop

    def on_change(self, ev: FdbChange | NeighChange) -> None:
        if isinstance(ev, FdbChange):
            self._on_fdb(ev)
        else:
            self._on_neigh(ev)

    def _on_fdb(self, ev: FdbChange) -> None:
        wants = self._wanted_fdb(ev.mac)
        if not wants:
            return  # not a MAC varpd wants: someone else's, or a removal the full pass finishes
        tables = self._tables()
        port = ev.port or (tables.dev_port if tables is not None else 4789)  # no NDA_PORT: the device's
        wanted_here = any(e.dst == ev.dst and e.port == port for e in wants)
        if ev.deleted:
            if not wanted_here:
                return  # a remote varpd does not want went (its own removal)
            self._fdb.add(ev.mac)
        elif not ev.owned:
            self._take.add(ev.mac)  # added or changed by someone else
        elif wanted_here:
            return  # varpd's own programming, as wanted
        else:
            self._fdb.add(ev.mac)
        self._kick()

    def _on_neigh(self, ev: NeighChange) -> None:
        want = self._wanted_neigh(ev.ip)
        if want is None or (ev.owned and not ev.deleted and ev.mac == want.mac):
            return
        self._neigh.add(ev.ip)
        self._kick()

    def _kick(self) -> None:
        if self._running is None or self._running.done():
            self._running = self._tasks.spawn(self._repair())

    async def _repair(self) -> None:
        """Program what is pending; events that arrive meanwhile are picked up by the next turn."""
        while self._fdb or self._take or self._neigh:
            tables = self._tables()
            if tables is None or tables.closed:
                self._fdb, self._take, self._neigh = set(), set(), set()
                return  # stopping, or the device is being re-created: the full pass follows
            take, self._take = self._take, set()
            fdb, self._fdb = self._fdb - take, set()
            neigh, self._neigh = self._neigh, set()
            failures: list[OpFailure] = []
            # generators: the wanted state is read inside KernelTables' lock, at send time
            if take:
                failures += await tables.take_fdb(self._entries(take))
            if fdb:
                failures += await tables.add_fdb(self._entries(fdb))
            if neigh:
                failures += await tables.add_neigh(n for n in map(self._wanted_neigh, neigh) if n is not None)
            self._counters["drift_repairs"] += len(take) + len(fdb) + len(neigh)
            log.info("overlay=%s event=drift-repaired fdb=%d neigh=%d", self.name, len(take) + len(fdb), len(neigh))
            if failures:
                self._on_failures(failures)

    def _entries(self, macs: set[str]) -> Iterator[FdbEntry]:
        for mac in macs:
            yield from self._wanted_fdb(mac)


class Resync:
    """Full passes on request, coalesced: a request while one runs gives exactly one more pass
    after it (events lost during a pass may predate its dump), never a queue of them."""

    def __init__(self, tasks: TaskSet, run: Callable[[], Awaitable[object]]) -> None:
        self._run = run
        self._again = False
        self._task: asyncio.Task | None = None
        self._tasks = tasks

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def request(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = self._tasks.spawn(self._loop())

    async def _loop(self) -> None:
        while True:
            self._again = False
            await self._run()
            if not self._again:
                return
