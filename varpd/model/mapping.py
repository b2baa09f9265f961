"""The mapping: where each overlay MAC lives, and which overlay IPs it answers for.

Pure values, no I/O.  Every backend (files, etcd, http, svp) produces the same
`MappingRecord`, so the daemon, the reconciler and the proxies never care which
backend answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Iterable, Mapping as TMapping

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class Destination:
    """An underlay endpoint: the VTEP address and UDP port a frame is sent to."""

    ip: IPAddress
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class MappingRecord:
    """One VNIC: its MAC, where it lives, and the overlay addresses it owns."""

    mac: str
    dest: Destination
    arp: IPv4Address | None = None
    ndp: IPv6Address | None = None
    dhcp_proxy: str | None = None


@dataclass(frozen=True, slots=True)
class Mapping:
    """An immutable snapshot of a backend's whole table, indexed both ways."""

    by_mac: TMapping[str, MappingRecord] = field(default_factory=dict)
    by_ip: TMapping[IPAddress, MappingRecord] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Iterable[MappingRecord]) -> "Mapping":
        by_mac: dict[str, MappingRecord] = {}
        by_ip: dict[IPAddress, MappingRecord] = {}
        for rec in records:
            by_mac[rec.mac] = rec
            if rec.arp is not None:
                by_ip[rec.arp] = rec
            if rec.ndp is not None:
                by_ip[rec.ndp] = rec
        return cls(by_mac, by_ip)

    def __len__(self) -> int:
        return len(self.by_mac)

    def diff(self, newer: "Mapping") -> "MappingChange":
        """What changed from self to `newer`: the only work a reload must do."""
        upserted = tuple(
            rec for mac, rec in newer.by_mac.items() if self.by_mac.get(mac) != rec
        )
        removed = tuple(
            rec for mac, rec in self.by_mac.items() if mac not in newer.by_mac
        )
        return MappingChange(upserted=upserted, removed=removed)


@dataclass(frozen=True, slots=True)
class MappingChange:
    """A delta a backend reports: records added or changed, and records gone.

    `removed` carries whole records (not just MACs) so that the daemon can
    withdraw the neighbour entries of the old IPs too.
    """

    upserted: tuple[MappingRecord, ...] = ()
    removed: tuple[MappingRecord, ...] = ()
    full_resync: bool = False
    # overlay IPs the backend says changed owner (svp's VL3 log): announced to local guests even
    # when the daemon holds no entry for them: a guest's own ARP/NDP cache may still hold the old owner
    moved_ips: tuple = ()

    def __bool__(self) -> bool:
        return bool(self.upserted or self.removed or self.full_resync)
