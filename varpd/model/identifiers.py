"""The identifiers of an overlay the kernel is strict about: its VNI, its interface name, its namespace.

One definition for the config file, the admin API and every CLI command, so that all of them
refuse the same values with the same words.
"""

from __future__ import annotations

import re

VNI_MIN, VNI_MAX = 1, 0xFFFFFF  # a 24-bit field; 0 is refused by illumos dladm and by this daemon
VNI_RANGE = f"{VNI_MIN}-{VNI_MAX}"

# stricter than the kernel on purpose: no '%' (a numbering pattern to the kernel),
# nothing a URL, a shell or a path would read differently
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# /proc/sys/net/{ipv4,ipv6}/conf/{all,default} exist on every host, so the kernel refuses these
# names with EINVAL (measured on 6.18: `ip link add all type bridge`)
RESERVED_IFNAMES = frozenset({"all", "default"})


def vni_problem(value: int) -> str | None:
    """Why `value` is not a VXLAN VNI, or None."""
    if not VNI_MIN <= value <= VNI_MAX:
        return f"{value} is not a VNI: a VNI is {VNI_RANGE} (the VXLAN VNI range)"
    return None


def ifname_problem(value: str) -> str | None:
    """Why `value` cannot name an overlay's device or bridge, or None (length is checked apart)."""
    if not _IFNAME.fullmatch(value):
        return f"{value!r} is not a valid interface name (letters, digits, '_', '-', '.')"
    if value in RESERVED_IFNAMES:
        return f"{value!r} is reserved by the kernel (/proc/sys/net/*/conf/{value}): choose another name"
    return None


def netns_problem(value: str) -> str | None:
    """Why `value` cannot name a network namespace (a file of /run/netns), or None. A name only:
    never a path, so nothing outside /run/netns is ever opened or bind-mounted."""
    if not _IFNAME.fullmatch(value) or len(value) > 64:
        return f"{value!r} is not a network namespace name (at most 64 letters, digits, '_', '-', '.'; no path)"
    return None
