"""The mapping: where each overlay MAC lives, and which overlay IPs it answers for.

Pure values, no I/O.  Every backend (files, etcd, http, svp) produces the same
`MappingRecord`, so the daemon, the reconciler and the proxies never care which
backend answered.

Compact, because a host may hold a million records: a record keeps its overlay
addresses as integers (an IPv4Address object costs 80 bytes, an IPv6Address 100,
the integer 32 and 44) and builds the address objects when asked; destinations
are interned (a million VNICs live behind a few thousand VTEPs); the IP index
is keyed by those same integers.  A record costs about 300 bytes with both
indexes, where frozen dataclasses of address objects cost 540; a record without a dhcp-proxy
has four slots (64 bytes, where five take the allocator's 80-byte class).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping as AbcMapping, MutableMapping
from dataclasses import FrozenInstanceError, dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Iterable, Mapping as TMapping

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class Destination:
    """An underlay endpoint: the VTEP address and UDP port a frame is sent to."""

    ip: IPAddress
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"

    @staticmethod
    def of(ip: IPAddress, port: int) -> "Destination":
        """The shared Destination of (ip, port): one object per VTEP, not one per record."""
        return intern_destination(Destination(ip, port))


_DESTINATIONS: dict[Destination, Destination] = {}
_MAX_INTERNED = 1 << 16  # past this many VTEPs sharing starts afresh (old objects stay valid)


def intern_destination(dest: Destination) -> Destination:
    """`dest`, or an equal Destination seen before: records share one object per VTEP."""
    shared = _DESTINATIONS.get(dest)
    if shared is None:
        if len(_DESTINATIONS) >= _MAX_INTERNED:
            _DESTINATIONS.clear()
        shared = _DESTINATIONS[dest] = dest
    return shared


_set = object.__setattr__


class MappingRecord:
    """One VNIC: its MAC, where it lives, and the overlay addresses it owns.

    Immutable and hashable like a frozen dataclass (dataclasses.replace works); `arp`
    and `ndp` are built from the integers kept (`arp_int`, `ndp_int`: what the indexes use).
    A record with a dhcp-proxy is of a subclass with a fifth slot: four slots are 64 bytes,
    five 80 (the allocator's 16-byte classes), 16 MB per million records that have none.
    """

    __slots__ = ("mac", "dest", "arp_int", "ndp_int")
    mac: str
    dest: Destination
    arp_int: int | None
    ndp_int: int | None
    dhcp_proxy: str | None = None  # a class attribute here, a slot of _ProxiedRecord

    def __new__(cls, mac: str, dest: Destination, arp: IPv4Address | None = None,
                ndp: IPv6Address | None = None, dhcp_proxy: str | None = None) -> "MappingRecord":
        # built here, not in __init__: the class is chosen by dhcp_proxy, whatever `cls` was asked
        # (dataclasses.replace calls the record's own class)
        return MappingRecord.compact(
            mac, intern_destination(dest),
            None if arp is None else int(arp if isinstance(arp, IPv4Address) else IPv4Address(arp)),
            None if ndp is None else int(ndp if isinstance(ndp, IPv6Address) else IPv6Address(ndp)),
            dhcp_proxy)

    @classmethod
    def compact(cls, mac: str, dest: Destination, arp_int: int | None, ndp_int: int | None,
                dhcp_proxy: str | None) -> "MappingRecord":
        """A record from already-checked parts (`dest` interned): the parsers' fast path."""
        if dhcp_proxy is None:
            rec = _new(MappingRecord)
        else:
            rec = _new(_ProxiedRecord)
            _set(rec, "dhcp_proxy", dhcp_proxy)
        _set(rec, "mac", mac)
        _set(rec, "dest", dest)
        _set(rec, "arp_int", arp_int)
        _set(rec, "ndp_int", ndp_int)
        return rec

    @property
    def arp(self) -> IPv4Address | None:
        return None if self.arp_int is None else IPv4Address(self.arp_int)

    @property
    def ndp(self) -> IPv6Address | None:
        return None if self.ndp_int is None else IPv6Address(self.ndp_int)

    def __eq__(self, other: object) -> bool:
        if other.__class__ not in _RECORD_CLASSES:
            return NotImplemented
        return (self is other or self.mac == other.mac and self.dest == other.dest and self.arp_int == other.arp_int
                and self.ndp_int == other.ndp_int and self.dhcp_proxy == other.dhcp_proxy)

    def __hash__(self) -> int:
        return hash((self.mac, self.dest, self.arp_int, self.ndp_int, self.dhcp_proxy))

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self):  # copy and pickle build through __new__, as a constructor call would
        return MappingRecord, (self.mac, self.dest, self.arp, self.ndp, self.dhcp_proxy)

    def __repr__(self) -> str:
        return (f"MappingRecord(mac={self.mac!r}, dest={self.dest!r}, arp={self.arp!r}, ndp={self.ndp!r}, "
                f"dhcp_proxy={self.dhcp_proxy!r})")


class _ProxiedRecord(MappingRecord):
    """A MappingRecord whose DHCP broadcasts go to another MAC (its own slot for it)."""

    __slots__ = ("dhcp_proxy",)


_RECORD_CLASSES = (MappingRecord, _ProxiedRecord)

_new = object.__new__


@dataclass(frozen=True)
class _RecordFields:
    mac: str
    dest: Destination
    arp: IPv4Address | None = None
    ndp: IPv6Address | None = None
    dhcp_proxy: str | None = None


# dataclasses.fields/replace/asdict see the record as the frozen dataclass it replaces
MappingRecord.__dataclass_fields__ = _RecordFields.__dataclass_fields__  # type: ignore[attr-defined]
MappingRecord.__dataclass_params__ = _RecordFields.__dataclass_params__  # type: ignore[attr-defined]


class AddressIndex(MutableMapping):
    """Overlay IP → record, keyed inside by the address's integer (one dict per family).

    Reads like a dict keyed by IPv4Address/IPv6Address; `v4`/`v6` are the integer-keyed
    dicts themselves, for code that already holds the integer (the parsers, DesiredState).
    """

    __slots__ = ("v4", "v6")

    def __init__(self, items: Iterable[tuple[IPAddress, MappingRecord]] | TMapping[IPAddress, MappingRecord] = ()) -> None:
        self.v4: dict[int, MappingRecord] = {}
        self.v6: dict[int, MappingRecord] = {}
        for ip, rec in (items.items() if isinstance(items, AbcMapping) else items):
            self[ip] = rec

    def _table(self, ip: object) -> dict[int, MappingRecord]:
        if isinstance(ip, IPv4Address):
            return self.v4
        if isinstance(ip, IPv6Address):
            return self.v6
        raise KeyError(ip)

    def __getitem__(self, ip: IPAddress) -> MappingRecord:
        try:
            return self._table(ip)[int(ip)]
        except KeyError:
            raise KeyError(ip) from None

    def get(self, ip: IPAddress, default: Any = None) -> Any:
        if isinstance(ip, IPv4Address):
            return self.v4.get(int(ip), default)
        if isinstance(ip, IPv6Address):
            return self.v6.get(int(ip), default)
        return default

    def __contains__(self, ip: object) -> bool:
        return self.get(ip, _ABSENT) is not _ABSENT  # type: ignore[arg-type]

    def __setitem__(self, ip: IPAddress, rec: MappingRecord) -> None:
        self._table(ip)[int(ip)] = rec

    def __delitem__(self, ip: IPAddress) -> None:
        try:
            del self._table(ip)[int(ip)]
        except KeyError:
            raise KeyError(ip) from None

    def __iter__(self) -> Iterator[IPAddress]:
        yield from map(IPv4Address, self.v4)
        yield from map(IPv6Address, self.v6)

    def __len__(self) -> int:
        return len(self.v4) + len(self.v6)

    def copy(self) -> "AddressIndex":
        out = AddressIndex()
        out.v4, out.v6 = dict(self.v4), dict(self.v6)
        return out

    def __repr__(self) -> str:
        return f"AddressIndex({dict(self.items())!r})"


_ABSENT = object()


@dataclass(frozen=True, slots=True)
class Mapping:
    """An immutable snapshot of a backend's whole table, indexed both ways."""

    by_mac: TMapping[str, MappingRecord] = field(default_factory=dict)
    by_ip: AddressIndex = field(default_factory=AddressIndex)

    def __post_init__(self) -> None:
        if not isinstance(self.by_ip, AddressIndex):  # a plain dict keyed by address objects
            object.__setattr__(self, "by_ip", AddressIndex(self.by_ip))

    @classmethod
    def of(cls, records: Iterable[MappingRecord]) -> "Mapping":
        by_mac: dict[str, MappingRecord] = {}
        by_ip = AddressIndex()
        v4, v6 = by_ip.v4, by_ip.v6
        for rec in records:
            by_mac[rec.mac] = rec
            if rec.arp_int is not None:
                v4[rec.arp_int] = rec
            if rec.ndp_int is not None:
                v6[rec.ndp_int] = rec
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
