"""Which kernel entries a mapping record asks for on this host.

A record whose destination is this host's own VTEP is a local VNIC: it is
reached through the bridge and never programmed (programming its neighbour
entries would make the kernel proxy answer a guest's own DAD probe).

DesiredState keeps the records themselves (shared with the backend's mapping:
one dict slot per record, no entry objects) and makes FdbEntry/NeighEntry values
only when asked: a million records cost 40 MB here, not 400.
"""

from __future__ import annotations

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


class FdbView(AbcMapping):
    """MAC → the FdbEntry the kernel should hold, made from the records on access."""

    __slots__ = ("_records",)

    def __init__(self, records: dict[str, MappingRecord]) -> None:
        self._records = records

    def __getitem__(self, mac: str) -> FdbEntry:
        return fdb_for(mac, self._records[mac].dest)

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def values(self) -> Iterator[FdbEntry]:  # type: ignore[override]
        return (FdbEntry(rec.mac, rec.dest.ip, rec.dest.port) for rec in self._records.values())


class NeighView(AbcMapping):
    """Overlay IP → the NeighEntry the kernel should hold.  Iterating is what the reconciler
    does; a lookup by IP scans (it is for inspection and tests, never on a hot path)."""

    __slots__ = ("_records",)

    def __init__(self, records: dict[str, MappingRecord]) -> None:
        self._records = records

    def values(self) -> Iterator[NeighEntry]:  # type: ignore[override]
        for rec in self._records.values():
            if rec.arp_int is not None:
                yield NeighEntry(rec.arp, rec.mac)
            if rec.ndp_int is not None:
                yield NeighEntry(rec.ndp, rec.mac)

    def __getitem__(self, ip) -> NeighEntry:
        for n in self.values():
            if n.ip == ip:
                return n
        raise KeyError(ip)

    def __iter__(self) -> Iterator:
        return (n.ip for n in self.values())

    def __len__(self) -> int:
        return sum((rec.arp_int is not None) + (rec.ndp_int is not None) for rec in self._records.values())


@dataclass(slots=True)
class DesiredState:
    """The entries the kernel should hold, kept current from mapping changes."""

    local: Destination
    records: dict[str, MappingRecord] = field(default_factory=dict)  # the remote records of our family
    skipped: int = 0  # records whose underlay family differs from the VTEP's

    @property
    def fdb(self) -> FdbView:
        return FdbView(self.records)

    @property
    def neigh(self) -> NeighView:
        return NeighView(self.records)

    def _usable(self, rec: MappingRecord) -> bool:
        if is_local(rec, self.local):
            return False
        if rec.dest.ip.version != self.local.ip.version:
            self.skipped += 1
            return False
        return True

    def load(self, mapping: Mapping) -> None:
        self.skipped = 0
        version, local_ip = self.local.ip.version, self.local.ip
        records = {}
        for mac, rec in mapping.by_mac.items():
            ip = rec.dest.ip
            if ip.version != version:
                self.skipped += 1
            elif ip != local_ip:
                records[mac] = rec
        self.records = records

    def add(self, rec: MappingRecord) -> tuple[list[FdbEntry], list[NeighEntry]]:
        if not self._usable(rec):
            return [], []
        self.records[rec.mac] = rec
        return [fdb_for(rec.mac, rec.dest)], neighs_for(rec)

    def remove(self, rec: MappingRecord) -> tuple[list[FdbEntry], list[NeighEntry]]:
        old = self.records.pop(rec.mac, None)
        if old is None:
            return [], []
        return [fdb_for(old.mac, old.dest)], neighs_for(old)

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
            old = self.records.get(rec.mac)
            f, n = self.add(rec)
            add_f += f
            add_n += n
            if old is not None:
                kept = {x.ip for x in n}
                del_n += [e for e in neighs_for(old) if e.ip not in kept]
                if not f:  # became local or unusable
                    del_f.append(fdb_for(self.records.pop(rec.mac).mac, old.dest))
        # an IP moved to another MAC is an add (replace), not a delete
        added = {n.ip for n in add_n}
        del_n = [e for e in del_n if e.ip not in added]
        return add_f, add_n, del_f, del_n
