"""Plain value types shared by the kmod-shim and its callers.

MAC addresses are lowercase ``"aa:bb:cc:dd:ee:ff"`` strings; IP addresses are
:mod:`ipaddress` objects.  All dataclasses are frozen and slotted so they are
hashable (usable in sets) and cheap.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address

__all__ = [
    "IPAddress",
    "DeviceSpec",
    "DeviceHandle",
    "FdbEntry",
    "NeighEntry",
    "L2Miss",
    "L3Miss",
    "EventsLost",
    "AddressChange",
    "FdbChange",
    "NeighChange",
    "OpFailure",
    "CapturedFrame",
    "KmodError",
    "DeviceConflict",
]


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    name: str
    vni: int
    local_ip: IPAddress
    port: int = 4789
    bridge: str | None = None
    underlay_dev: str | None = None
    mtu: int | None = None
    # Dynamic overlays want the kernel's proxy and miss reports; a point-to-point
    # overlay (one all-zeros FDB entry) must not proxy, or ARP would never cross.
    proxy: bool = True
    l2miss: bool = True
    l3miss: bool = True
    # A flooding overlay turns the device's proxy off (it would swallow every ARP sent out, replies
    # included) and has the bridge answer instead: neigh_suppress on the device's bridge port.
    neigh_suppress: bool = False


@dataclass(frozen=True, slots=True)
class DeviceHandle:
    name: str
    ifindex: int
    vni: int
    bridge: str | None
    bridge_ifindex: int | None
    created_vxlan: bool
    created_bridge: bool


@dataclass(frozen=True, slots=True)
class FdbEntry:
    """A remote FDB entry on a VXLAN device: inner MAC -> underlay (dst, port)."""

    mac: str
    dst: IPAddress
    port: int


@dataclass(frozen=True, slots=True)
class NeighEntry:
    """A neighbour (ARP/NDP) entry on a VXLAN device used by the proxy path."""

    ip: IPAddress
    mac: str


@dataclass(frozen=True, slots=True)
class L2Miss:
    ifindex: int
    mac: str
    vni: int | None


@dataclass(frozen=True, slots=True)
class L3Miss:
    ifindex: int
    ip: IPAddress


@dataclass(frozen=True, slots=True)
class FdbChange:
    """The kernel announced a changed (RTM_NEWNEIGH) or removed (RTM_DELNEIGH) remote of a VXLAN
    device's FDB.  `port` is 0 when the event names none (the device's own port)."""

    ifindex: int
    mac: str
    dst: IPAddress
    port: int
    deleted: bool
    owned: bool  # carries varpd's mark (varpd_kmod.netlink.fdb_owned)


@dataclass(frozen=True, slots=True)
class NeighChange:
    """The kernel announced a changed or removed neighbour entry on a watched device.  `mac` is
    None unless the entry is usable by the VXLAN proxy (connected state, a 6-byte lladdr)."""

    ifindex: int
    ip: IPAddress
    mac: str | None
    deleted: bool
    owned: bool  # NDA_PROTOCOL is varpd's


@dataclass(frozen=True, slots=True)
class EventsLost:
    """Kernel events were dropped (ENOBUFS): the consumer must re-read kernel state."""

    reason: str


@dataclass(frozen=True, slots=True)
class AddressChange:
    """An address was added to (or removed from) interface `ifindex`: a VTEP may have gained or lost
    its listen address. `ip` is None if the message carried none."""

    ifindex: int
    ip: IPAddress | None
    added: bool


@dataclass(frozen=True, slots=True)
class OpFailure:
    entry: object
    errno: int
    message: str


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    """One frame as it was on the wire (a VLAN tag the kernel moved to metadata is put back in
    `data`), with what PACKET_AUXDATA and the receive timestamp say about it."""

    data: bytes
    outgoing: bool
    ifindex: int
    pkttype: int = 0  # PACKET_HOST, _BROADCAST, _MULTICAST, _OTHERHOST (only seen promiscuously), _OUTGOING
    vlan: int | None = None  # 802.1Q VLAN id the frame carried (tag re-inserted in data)
    csum_partial: bool = False  # TP_STATUS_CSUMNOTREADY: a local sender's offloaded, unfinished L4 checksum
    timestamp: float = 0.0  # kernel receive time (time.time() clock), 0 if unknown


class KmodError(Exception):
    """Base error of the kmod-shim."""


class DeviceConflict(KmodError):
    """A device of that name exists with different parameters or a different kind."""
