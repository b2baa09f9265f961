"""point: a POINT backend (direct) gets one all-zeros FDB entry; everything, broadcast included,
goes to its one destination."""

from __future__ import annotations

from varpd.daemon.desired import fdb_for
from varpd.daemon.modes.base import ModeStrategy
from varpd_kmod.types import FdbEntry, NeighEntry

ALL_ZEROS = "00:00:00:00:00:00"


class PointMode(ModeStrategy):
    name = "point"

    def __init__(self, rt) -> None:
        super().__init__(rt)
        self.fdb: list[FdbEntry] = []

    async def before_reconcile(self, have_fdb: dict[FdbEntry, bool], have_neigh: dict[NeighEntry, bool], *, adopt: bool) -> None:
        dest = await self.rt.backend.default()
        self.fdb = [fdb_for(ALL_ZEROS, dest)] if dest is not None else []

    def wanted(self):
        return self.fdb, ()
