"""A Mapping as a few flat arrays in one bytes object: how a parser in another process hands it over.

A hosts.json of a million records parsed in the daemon left ~200 MB of its short-lived
objects (the json tree's strings, the records' dicts) scattered among the records that
stay, and the allocator cannot give a page back while one object on it lives.  Parsed in
a child process (varpd.config.hosts_apart), the parent only ever holds this form (31 bytes
a record) and the records it builds from it, which come out densely packed.

Layout: a header (magic, count, the stamp of the file read, the lengths of two JSON
tables: the destinations and the dhcp-proxy MACs, each given once), then per record, as
columns: MAC (6 bytes), destination index (u32), arp (u32), ndp (16 bytes, big endian),
dhcp-proxy index (i32, -1 none), presence flags (1 byte: 1 arp, 2 ndp).  Native byte
order: both ends are the same host.

The parts are trusted (the child validated them with the one shared validation,
varpd.config.hosts); `unpack` only checks the framing.
"""

from __future__ import annotations

import json
import struct
from array import array
from ipaddress import ip_address

from varpd.model.mapping import AddressIndex, Destination, Mapping, MappingRecord

__all__ = ["HEADER", "PackError", "body_size", "pack", "unpack"]

MAGIC = b"VPM1"
HEADER = struct.Struct("=4sQQQQII")  # magic, count, st_ino, st_mtime_ns, st_size, len(dests), len(proxies)
ROW = 6 + 4 + 4 + 16 + 4 + 1
_HAS_ARP, _HAS_NDP = 1, 2


class PackError(ValueError):
    """The bytes are not a packed mapping (truncated, or not what `pack` made)."""


def pack(mapping: Mapping, stamp: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    """`mapping` (and the stamp of the file it came from) as one bytes object."""
    dests: dict[Destination, int] = {}
    proxies: dict[str, int] = {}
    n = len(mapping.by_mac)
    macs = bytearray()
    dest_ix = array("I")
    arps = array("I")
    ndps = bytearray()
    proxy_ix = array("i")
    flags = bytearray()
    fromhex = bytes.fromhex
    for rec in mapping.by_mac.values():
        macs += fromhex(rec.mac.replace(":", ""))
        dest_ix.append(dests.setdefault(rec.dest, len(dests)))
        arps.append(rec.arp_int or 0)
        ndps += (rec.ndp_int or 0).to_bytes(16, "big")
        proxy_ix.append(-1 if rec.dhcp_proxy is None else proxies.setdefault(rec.dhcp_proxy, len(proxies)))
        flags.append((rec.arp_int is not None) * _HAS_ARP | (rec.ndp_int is not None) * _HAS_NDP)
    dest_json = json.dumps([[str(d.ip), d.port] for d in dests]).encode()
    proxy_json = json.dumps(list(proxies)).encode()
    head = HEADER.pack(MAGIC, n, *stamp, len(dest_json), len(proxy_json))
    return b"".join((head, dest_json, proxy_json, macs, dest_ix.tobytes(), arps.tobytes(), ndps,
                     proxy_ix.tobytes(), flags))


def body_size(header: bytes) -> int:
    """How many bytes follow a packed mapping's header (PackError if it is not one)."""
    _magic, n, _ino, _mtime, _size, dl, pl = _header(header)
    return dl + pl + n * ROW


def _header(data) -> tuple:
    if len(data) < HEADER.size:
        raise PackError(f"{len(data)} bytes: shorter than the header")
    fields = HEADER.unpack_from(data)
    if fields[0] != MAGIC:
        raise PackError("not a packed mapping")
    return fields


def unpack(data: bytes | bytearray, previous: Mapping | None = None) -> tuple[tuple[int, int, int], Mapping]:
    """(the stamp, the Mapping) of `data`; a record equal to one of `previous` is that very record
    (a reload of a big file with a few changes allocates its indexes, not a million records)."""
    _magic, n, ino, mtime, size, dl, pl = _header(data)
    if len(data) != HEADER.size + dl + pl + n * ROW:
        raise PackError(f"{len(data)} bytes for {n} records")
    view = memoryview(data)
    off = HEADER.size
    dests = [Destination.of(ip_address(ip), port) for ip, port in json.loads(bytes(view[off:off + dl]))]
    off += dl
    proxies = json.loads(bytes(view[off:off + pl]))
    off += pl

    def column(width: int) -> memoryview:
        nonlocal off
        part = view[off:off + n * width]
        off += n * width
        return part

    macs = column(6).hex(":")  # 18 characters a MAC, the last one's separator missing
    dest_ix, arps, proxy_ix = array("I"), array("I"), array("i")
    dest_ix.frombytes(column(4))
    arps.frombytes(column(4))
    ndps = column(16)
    proxy_ix.frombytes(column(4))
    flags = bytes(column(1))

    old = previous.by_mac if previous is not None else {}
    by_mac: dict[str, MappingRecord] = {}
    by_ip = AddressIndex()
    v4, v6 = by_ip.v4, by_ip.v6
    compact = MappingRecord.compact
    from_bytes = int.from_bytes
    for i in range(n):
        mac = macs[18 * i:18 * i + 17]
        f = flags[i]
        arp = arps[i] if f & _HAS_ARP else None
        ndp = from_bytes(ndps[16 * i:16 * i + 16], "big") if f & _HAS_NDP else None
        p = proxy_ix[i]
        dest, proxy = dests[dest_ix[i]], (None if p < 0 else proxies[p])
        rec = old.get(mac)
        if (rec is None or (rec.dest is not dest and rec.dest != dest) or rec.arp_int != arp or rec.ndp_int != ndp
                or rec.dhcp_proxy != proxy):
            rec = compact(mac, dest, arp, ndp, proxy)
        else:
            mac = rec.mac  # the kept record's own string (the fresh one goes)
        by_mac[mac] = rec
        if arp is not None:
            v4[rec.arp_int] = rec
        if ndp is not None:
            v6[rec.ndp_int] = rec
    return (ino, mtime, size), Mapping(by_mac, by_ip)
