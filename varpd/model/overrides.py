"""Entries an administrator sets by hand (dladm modify-overlay -s), over whatever the backend says.

A MAC is either sent to a fixed destination or dropped: a drop removes its FDB
entry and the neighbour entries that point at it, so nothing is proxied for it
either.  Pure logic; the runtime persists them and reconciles.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Mapping

from varpd.model.addresses import check_vtep
from varpd.model.mapping import Destination
from varpd_kmod.types import FdbEntry, NeighEntry

DROP = "drop"
Override = Destination | None  # None: drop


def parse_destination(text: str, default_port: int = 4789) -> Override:
    """`drop`, `IP`, `IP:PORT` or `[IPv6]:PORT` → an override; ValueError naming what is wrong."""
    text = text.strip()
    if text == DROP:
        return None
    host, port = text, default_port
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not [IPv6]:port")
        port = _port(rest[1:]) if rest else default_port
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = _port(p)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: the port must be 1-65535")
    try:
        check_vtep(ip)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return Destination(ip, port)


def _port(text: str) -> int:
    """A port's digits as a number; -1 (refused below) for anything else: `int()` would take
    ' 1', '1_0' or '²' and choke on 5000 digits."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 5 else -1


def format_override(value: Override) -> str:
    return DROP if value is None else str(value)


def apply_overrides(
    fdb: Iterable[FdbEntry], neigh: Iterable[NeighEntry], overrides: Mapping[str, Override]
) -> tuple[list[FdbEntry], list[NeighEntry]]:
    """The wanted entries once the administrator's overrides are laid over the backend's."""
    if not overrides:
        return list(fdb), list(neigh)
    out = {e.mac: e for e in fdb if e.mac not in overrides}
    for mac, dest in overrides.items():
        if dest is not None:
            out[mac] = FdbEntry(mac, dest.ip, dest.port)
    dropped = {mac for mac, dest in overrides.items() if dest is None}
    return list(out.values()), [n for n in neigh if n.mac not in dropped]
