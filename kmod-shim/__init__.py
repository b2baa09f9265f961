"""varpd_kmod: the Linux stand-in for the illumos overlay module (netlink, AF_PACKET).

The only package of varpd that talks to the kernel directly (pyroute2,
NETLINK_ROUTE and AF_PACKET sockets).
"""
from .types import (
    AddressChange,
    CapturedFrame,
    DeviceConflict,
    DeviceHandle,
    DeviceSpec,
    EventsLost,
    FdbChange,
    FdbEntry,
    KmodError,
    L2Miss,
    L3Miss,
    NeighChange,
    NeighEntry,
    OpFailure,
)
from .device import delete_overlay, ensure_overlay, find_overlay, link_index
from .netlink import KernelTables
from .misses import MissListener
from .frames import (
    BPF_ACCEPT_ALL,
    BPF_ARP,
    BPF_ARP_NDP_DHCP,
    BPF_DHCP4,
    BPF_ICMPV6,
    FrameTap,
    bpf_arp_ndp_dhcp,
)

__all__ = [
    "AddressChange",
    "CapturedFrame",
    "DeviceConflict",
    "DeviceHandle",
    "DeviceSpec",
    "EventsLost",
    "FdbChange",
    "FdbEntry",
    "KmodError",
    "L2Miss",
    "L3Miss",
    "NeighChange",
    "NeighEntry",
    "OpFailure",
    "delete_overlay",
    "ensure_overlay",
    "find_overlay",
    "link_index",
    "KernelTables",
    "MissListener",
    "FrameTap",
    "bpf_arp_ndp_dhcp",
    "BPF_ARP_NDP_DHCP",
    "BPF_ARP",
    "BPF_DHCP4",
    "BPF_ICMPV6",
    "BPF_ACCEPT_ALL",
]
