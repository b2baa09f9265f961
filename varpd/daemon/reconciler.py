"""Desired state versus kernel state: compute the smallest set of changes.

Pure logic; the overlay runtime feeds it dumps from kmod-shim and applies the
plan with batched netlink.  Entries still wanted are never touched, so a
reconcile (at start, after ENOBUFS, periodically) never disturbs traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from varpd_kmod.types import FdbEntry, NeighEntry

FLOOD_MAC = "00:00:00:00:00:00"  # the VXLAN default destination: broadcast, multicast, unknown unicast


def _dest_key(e: FdbEntry) -> tuple:
    return e.dst.version, e.dst, e.port


@dataclass(frozen=True, slots=True)
class Plan:
    add_fdb: tuple[FdbEntry, ...] = ()
    del_fdb: tuple[FdbEntry, ...] = ()
    add_neigh: tuple[NeighEntry, ...] = ()
    del_neigh: tuple[NeighEntry, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add_fdb or self.del_fdb or self.add_neigh or self.del_neigh)

    def summary(self) -> dict[str, int]:
        return {
            "fdb_added": len(self.add_fdb),
            "fdb_removed": len(self.del_fdb),
            "neigh_added": len(self.add_neigh),
            "neigh_removed": len(self.del_neigh),
        }


def plan(
    want_fdb: Iterable[FdbEntry],
    want_neigh: Iterable[NeighEntry],
    have_fdb: Iterable[FdbEntry],
    have_neigh: Iterable[NeighEntry],
) -> Plan:
    """Adds (with replace) for missing or different entries; deletes for keys not wanted at all.

    FDB entries are keyed by MAC, neighbour entries by IP: a changed destination
    is one replace, never a delete followed by an add. The all-zeros MAC is the
    flood list: several entries that differ by destination (appended, the kernel
    refuses a replace), so it is compared as a set of whole entries.
    """
    want_fdb, have_fdb = list(want_fdb), list(have_fdb)
    want_flood = {e for e in want_fdb if e.mac == FLOOD_MAC}
    have_flood = {e for e in have_fdb if e.mac == FLOOD_MAC}
    want_f = {e.mac: e for e in want_fdb if e.mac != FLOOD_MAC}
    have_f: dict[str, list[FdbEntry]] = {}
    for e in have_fdb:
        if e.mac != FLOOD_MAC:
            have_f.setdefault(e.mac, []).append(e)
    add_fdb = [e for mac, e in want_f.items() if have_f.get(mac) != [e]]
    # A MAC with several remotes (appended by someone else) keeps only the wanted one.
    del_fdb = [
        e for mac, entries in have_f.items() for e in entries if mac not in want_f or (e != want_f[mac] and len(entries) > 1)
    ]
    add_fdb += sorted(want_flood - have_flood, key=_dest_key)
    del_fdb += sorted(have_flood - want_flood, key=_dest_key)
    want_n = {e.ip: e for e in want_neigh}
    have_n = {e.ip: e for e in have_neigh}
    add_neigh = [e for ip, e in want_n.items() if have_n.get(ip) != e]
    del_neigh = [e for ip, e in have_n.items() if ip not in want_n]
    return Plan(tuple(add_fdb), tuple(del_fdb), tuple(add_neigh), tuple(del_neigh))
