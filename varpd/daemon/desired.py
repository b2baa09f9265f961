"""Which kernel entries a mapping record asks for on this host.

A record whose destination is this host's own VTEP is a local VNIC: it is
reached through the bridge and never programmed (programming its neighbour
entries would make the kernel proxy answer a guest's own DAD probe).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from varpd.model import Destination, Mapping, MappingChange, MappingRecord
from varpd_kmod.types import FdbEntry, NeighEntry


def is_local(rec: MappingRecord, local: Destination) -> bool:
    return rec.dest.ip == local.ip


def fdb_for(mac: str, dest: Destination) -> FdbEntry:
    return FdbEntry(mac=mac, dst=dest.ip, port=dest.port)


def neighs_for(rec: MappingRecord) -> list[NeighEntry]:
    return [NeighEntry(ip=ip, mac=rec.mac) for ip in (rec.arp, rec.ndp) if ip is not None]


@dataclass(slots=True)
class DesiredState:
    """The entries the kernel should hold, kept current from mapping changes."""

    local: Destination
    fdb: dict[str, FdbEntry] = field(default_factory=dict)
    neigh: dict[object, NeighEntry] = field(default_factory=dict)
    skipped: int = 0  # records whose underlay family differs from the VTEP's

    def _usable(self, rec: MappingRecord) -> bool:
        if is_local(rec, self.local):
            return False
        if rec.dest.ip.version != self.local.ip.version:
            self.skipped += 1
            return False
        return True

    def load(self, mapping: Mapping) -> None:
        self.fdb.clear()
        self.neigh.clear()
        self.skipped = 0
        for rec in mapping.by_mac.values():
            self.add(rec)

    def add(self, rec: MappingRecord) -> tuple[list[FdbEntry], list[NeighEntry]]:
        if not self._usable(rec):
            return [], []
        entry = fdb_for(rec.mac, rec.dest)
        self.fdb[rec.mac] = entry
        neighs = neighs_for(rec)
        for n in neighs:
            self.neigh[n.ip] = n
        return [entry], neighs

    def remove(self, rec: MappingRecord) -> tuple[list[FdbEntry], list[NeighEntry]]:
        gone_fdb = [e for e in [self.fdb.pop(rec.mac, None)] if e is not None]
        gone_neigh = []
        for n in neighs_for(rec):
            if self.neigh.get(n.ip) == n:
                gone_neigh.append(self.neigh.pop(n.ip))
        return gone_fdb, gone_neigh

    def apply(self, change: MappingChange) -> tuple[list, list, list, list]:
        """Update from a delta; returns (add_fdb, add_neigh, del_fdb, del_neigh) to program."""
        add_f: list[FdbEntry] = []
        add_n: list[NeighEntry] = []
        del_f: list[FdbEntry] = []
        del_n: list[NeighEntry] = []
        for rec in change.removed:
            f, n = self.remove(rec)
            del_f += f
            del_n += n
        for rec in change.upserted:
            old_neigh = {n.ip: n for n in self.neigh.values() if n.mac == rec.mac}
            f, n = self.add(rec)
            add_f += f
            add_n += n
            stale = [e for ip, e in old_neigh.items() if ip not in {x.ip for x in n}]
            for e in stale:
                self.neigh.pop(e.ip, None)
            del_n += stale
            if not f and rec.mac in self.fdb:  # became local or unusable
                del_f.append(self.fdb.pop(rec.mac))
        # an IP moved to another MAC is an add (replace), not a delete
        del_n = [e for e in del_n if e.ip not in self.neigh]
        return add_f, add_n, del_f, del_n
