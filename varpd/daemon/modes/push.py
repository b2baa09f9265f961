"""push: an enumerable backend's whole mapping is programmed as permanent entries before traffic
flows, and kept current from its change stream."""

from __future__ import annotations

import logging

from varpd.daemon.desired import DesiredState
from varpd.daemon.modes.base import ModeStrategy
from varpd.model import Mapping, MappingChange

log = logging.getLogger("varpd.daemon.overlay")


class PushMode(ModeStrategy):
    name = "push"

    def __init__(self, rt) -> None:
        super().__init__(rt)
        self.desired = DesiredState(rt.local)
        self._version = 0  # bumped by every change of the desired state (wanted_version)

    def load(self, mapping: Mapping) -> None:
        self.desired.load(mapping)  # counted by the first pass (a million records: in slices)
        self._version += 1

    async def before_reconcile(self, have_fdb, have_neigh, *, adopt: bool) -> None:
        if await self.desired.count() and self.desired.skipped:
            log.warning("overlay=%s skipped=%d reason=underlay-family-differs-from-vtep", self.rt.name, self.desired.skipped)

    def wanted(self):
        return self.desired.fdb.values(), self.desired.neigh.values()

    def wanted_version(self) -> int:
        return self._version

    def remote_vteps(self):
        return self.desired.remote_vteps()

    def want_fdb(self, mac: str):
        e = self.desired.fdb.get(mac)
        return () if e is None else (e,)

    def want_neigh(self, ip):
        """By the index of the snapshot DesiredState follows (what the runtime has applied so far)."""
        return self.desired.neigh.get(ip)

    async def apply_change(self, change: MappingChange, snapshot: Mapping | None = None) -> None:
        rt = self.rt
        add_f, add_n, del_f, del_n = self.desired.apply(change, snapshot)
        self._version += 1
        if rt.tables is None:
            return  # still starting: the first reconcile programs the desired state
        if rt.overrides:  # the administrator's entries win over the mapping's
            add_f = [e for e in add_f if e.mac not in rt.overrides]
            del_f = [e for e in del_f if e.mac not in rt.overrides]
            add_n = [n for n in add_n if rt.overrides.get(n.mac, n) is not None]
        await rt._program(add_f, add_n, del_f, del_n)
        await rt._announce(add_n)
