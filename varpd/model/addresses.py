"""Which MACs and addresses may ever be programmed: the one check every backend's edge calls.

A record names a VNIC (a unicast MAC), the VTEP it lives behind (a unicast
underlay address another host can send to) and the overlay addresses it owns
(unicast, or the reconciler re-adds a neighbour the kernel never lists).  What
breaks the overlay when programmed, and why it is refused:

- MAC ``00:00:00:00:00:00``: the VXLAN default entry, every broadcast of the
  overlay would go to that one VTEP; group MACs (``ff:ff:…``, ``01:00:5e:…``):
  the kernel floods them, an entry would steal the flood.
- VTEP unspecified, loopback, multicast, ``255.255.255.255`` or an IPv4-mapped
  IPv6 form (``::ffff:a.b.c.d``, which the kernel treats as IPv6 on the wire).
- overlay (arp/ndp) unspecified, loopback, multicast, ``255.255.255.255``;
  link-local (``fe80::``) stays valid: NDP lives there.

Each check returns its (unchanged) argument or raises ValueError with one line
naming the value and what it is; callers add the field and the source.
"""

from __future__ import annotations

from ipaddress import IPv6Address

from varpd.model.mapping import IPAddress

__all__ = ["check_overlay_ip", "check_unicast_mac", "check_vtep", "mac_problem", "overlay_int_ok"]

_ZERO_MAC = "00:00:00:00:00:00"
_HEX = frozenset("0123456789abcdef")


def mac_problem(mac: str) -> str | None:
    """Why the canonical MAC `mac` cannot be a VNIC, or None when it is a unicast MAC."""
    if mac == _ZERO_MAC:
        return f"{mac} is the all-zero MAC (the VXLAN default entry), not a VNIC"
    if mac[1:2] in _HEX and int(mac[1], 16) & 1:  # the I/G bit of the first octet
        if mac == "ff:ff:ff:ff:ff:ff":
            return f"{mac} is the broadcast MAC, not a VNIC"
        return f"{mac} is a multicast MAC, not a VNIC"
    return None


def check_unicast_mac(mac: str) -> str:
    """`mac` (canonical lowercase form) if it is a unicast MAC; ValueError otherwise."""
    problem = mac_problem(mac)
    if problem is not None:
        raise ValueError(problem)
    return mac


def overlay_int_ok(n: int, version: int) -> bool:
    """Whether the address whose integer is `n` is neither unspecified, loopback, multicast nor broadcast.

    On the integer: a hosts.json of a million records checks two addresses per record."""
    if version == 4:
        return not (n == 0 or n >> 24 == 127 or n >> 28 == 14 or n == 0xFFFFFFFF)
    return not (n <= 1 or n >> 120 == 0xFF)


def _common(ip: IPAddress, role: str) -> None:
    n = int(ip)
    if overlay_int_ok(n, ip.version):
        return
    if n == 0:
        raise ValueError(f"{ip} is the unspecified address, not {role}")
    if ip.is_loopback:
        raise ValueError(f"{ip} is a loopback address, not {role}")
    if ip.is_multicast:
        raise ValueError(f"{ip} is a multicast address, not {role}")
    raise ValueError(f"{ip} is the broadcast address, not {role}")


def check_vtep(ip: IPAddress) -> IPAddress:
    """`ip` if a VTEP (underlay destination or listen address) may have it; ValueError otherwise."""
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        raise ValueError(f"::ffff:{ip.ipv4_mapped} is IPv4-mapped: write the IPv4 address {ip.ipv4_mapped}")
    _common(ip, "a VTEP")
    return ip


def check_overlay_ip(ip: IPAddress) -> IPAddress:
    """`ip` if a VNIC may own it (arp/ndp answers, neighbour entries); ValueError otherwise."""
    _common(ip, "a VNIC's address")
    return ip

