"""Is a device's table what is wanted?  Counted and digested, not planned.

Why: the full pass turned every dumped message into an FdbEntry/NeighEntry, indexed both
sides and planned a diff: 120 s of CPU for 3M entries, 40% of a core at a 300 s safety
interval.  A safety pass only needs to know *whether* the kernel differs, so each side is
reduced to a `Tally`: how many entries, and the sum of hash(key) over them (key: a tuple of
str and int, made the same from a kernel message and from an entry: FDB_KEY, NEIGH_KEY).  The
sum does not depend on order, and a changed, missing, extra or swapped entry changes it.
The full dump-and-diff runs only when the tallies differ.

Most of a dump is runs of messages with one layout (same length, same attributes at the same
places, same header bytes): a run's constant words are checked with strided copies, and its
keys are cut out by struct.iter_unpack and turned into hashes by map(), all at C speed.  Any
other message goes through the per-message parser, which keeps dump_fdb / dump_neigh's filter
exactly; it can only make a check say "differs" where the full pass would find nothing (an
owned multicast neighbour), never the other way round.

The kernel's VXLAN FDB dump restarts its walk of the device's list for every 32 KiB skb (the
kernel caps a dump skb there whatever the receive buffer): 100k entries cost 0.3-0.4 s of
kernel time, 1M cost 70 s.  Above DUMP_FDB_MAX wanted entries the FDB is checked with one
RTM_GETNEIGH per wanted MAC instead (2.6 s of kernel time at 1M), which sees every wanted
entry but not an extra one (see KernelSync.check).
"""
from __future__ import annotations

import asyncio
import errno as _errno
import socket
import struct
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter
from typing import Callable, Iterable

from .netlink import (AF_BRIDGE, AF_INET, AF_INET6, NDA_CACHEINFO, NDA_DST, NDA_IFINDEX, NDA_LLADDR, NDA_PORT,
                      NDA_PROBES, NDA_PROTOCOL, NDA_SRC_VNI, NDA_VNI, NDMSG, NLA, NLH, NLM_F_DUMP, NLM_F_DUMP_INTR,
                      NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NTF_MASTER, NTF_PROXY, NTF_SELF, NUD_NOARP,
                      NUD_PERMANENT, NUD_REACHABLE, RTM_GETNEIGH, RTM_NEWNEIGH, _attr, _BUFFERS, _neigh_addresses,
                      _neigh_header, _parse_error, _raise_if_error, _u32_or_zero, fdb_owned, neigh_owned,
                      open_route_socket)
from .types import FdbEntry, KmodError, NeighEntry

__all__ = ["FDB_KEY", "NEIGH_KEY", "Tally", "TableCheck", "tally_of", "DUMP_FDB_MAX"]

# The key of an entry, as a tuple the kernel side builds from message bytes (attrgetter runs in C)
FDB_KEY: Callable[[FdbEntry], tuple] = attrgetter("mac", "dst._ip", "dst._version", "port")
NEIGH_KEY: Callable[[NeighEntry], tuple] = attrgetter("ip._ip", "ip._version", "mac")
DUMP_FDB_MAX = 50_000  # wanted FDB entries up to which the check dumps the FDB (and so sees extras)
_MASK = (1 << 64) - 1
_CHUNK = 4096  # entries hashed between two turns of the loop
_GET_CHUNK = 2048  # RTM_GETNEIGH requests per send: their replies fit the 8 MiB receive buffer
_NEIGH_STATES = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE


@dataclass(slots=True)
class Tally:
    """A table reduced to a count and a sum of key hashes; `foreign`: keys (MAC, IP) of entries
    that are not varpd's, which the caller checks against what it wants; `missing`: wanted MACs
    a GET found no entry for."""

    count: int = 0
    total: int = 0
    foreign: list = field(default_factory=list)
    missing: int = 0

    def add(self, hashes: list[int]) -> None:
        self.count += len(hashes)
        self.total = (self.total + sum(hashes)) & _MASK

    def put(self, owned: bool, key: tuple, who) -> bool:
        """One entry the per-message parser found: counted if varpd's, else `who` is noted."""
        if owned:
            self.add([hash(key)])
        else:
            self.foreign.append(who)
        return owned

    def __add__(self, other: "Tally") -> "Tally":
        return Tally(self.count + other.count, (self.total + other.total) & _MASK, self.foreign + other.foreign,
                     self.missing + other.missing)

    def same(self, other: "Tally") -> bool:
        """Same entries (foreign ones and misses are the caller's to judge)."""
        return self.count == other.count and self.total == other.total


async def tally_of(entries: Iterable, key: Callable) -> Tally:
    """The tally of wanted entries, giving the loop a turn every _CHUNK of them."""
    out = Tally()
    hashes = map(hash, map(key, entries))
    while True:
        chunk = [h for _, h in zip(range(_CHUNK), hashes)]
        if not chunk:
            return out
        out.add(chunk)
        await asyncio.sleep(0)


# -- one layout's run of messages --------------------------------------------------------------
_FDB_KEYS = (NDA_LLADDR, NDA_DST, NDA_PORT)
_FDB_IGNORED = (NDA_CACHEINFO,)  # changes by itself (used/updated times)
_NEIGH_KEYS = (NDA_DST, NDA_LLADDR)
_NEIGH_IGNORED = (NDA_CACHEINFO, NDA_PROBES)


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where a message's parts are: the words every message of the run must share, and the
    struct format that cuts out its keys (fields in the order of `fields`)."""

    mlen: int
    const_words: tuple[int, ...]
    fmt: struct.Struct
    fields: tuple[int, ...]  # attribute types of the unpacked fields, in message order
    dst_len: int


def _layout(view: memoryview, off: int, mlen: int, keys: tuple[int, ...], ignored: tuple[int, ...]) -> _Layout | None:
    """The layout of the message at `off`, or None if it has a repeated, partial or unaligned attribute."""
    if mlen % 4:
        return None
    const = list(range(7))  # nlmsghdr (4 words) and ndmsg (3): length, type, flags, seq, pid; family…type
    spans: list[tuple[int, int, int]] = []  # (start, length, type) of key payloads, in message order
    seen: set[int] = set()
    dst_len = 0
    a = NLH.size + NDMSG.size
    while a < mlen:
        if a + 4 > mlen:
            return None
        alen, atype = NLA.unpack_from(view, off + a)
        atype &= 0x3FFF
        if alen < 4 or a + alen > mlen or atype in seen:
            return None
        seen.add(atype)
        const.append(a // 4)  # the attribute's header
        end = a + ((alen + 3) & ~3)
        if atype in keys:
            spans.append((a + 4, alen - 4, atype))
            if atype == NDA_DST:
                dst_len = alen - 4
        elif atype not in ignored:
            const += range((a + 4) // 4, end // 4)
        a = end
    if a != mlen or NDA_LLADDR not in seen or NDA_DST not in seen or dst_len not in (4, 16):
        return None
    parts, pos = [">"], 0
    for start, n, atype in spans:
        if atype == NDA_LLADDR and n != 6:
            return None
        parts.append(f"{start - pos}x" if start > pos else "")
        parts.append("H" if atype == NDA_PORT and n == 2 else f"{n}s")
        pos = start + n
    parts.append(f"{mlen - pos}x" if mlen > pos else "")
    return _Layout(mlen, tuple(const), struct.Struct("".join(parts)), tuple(s[2] for s in spans), dst_len)


def _same_prefix(col: bytes, k: int) -> int:
    """How many of the k 4-byte values in `col` equal the first, from the start (at least 1)."""
    first = col[:4]
    if col == first * k:
        return k
    lo, hi = 1, k
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if col[:4 * mid] == first * mid:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _run_length(view: memoryview, off: int, n: int, mlen: int) -> int:
    """How many messages of length `mlen` follow each other from `off` (at least 1)."""
    k = (n - off) // mlen
    if k <= 1:
        return 1
    return _same_prefix(view[off:off + k * mlen].cast("I")[0::mlen // 4].tobytes(), k)


def _uniform(words: memoryview, k: int, layout: _Layout) -> int:
    """How many of the k messages in `words` share the first one's constant words, from the start:
    a hand-added entry in the middle of a dump ends a run there instead of breaking it up."""
    stride = layout.mlen // 4
    for w in layout.const_words:
        k = _same_prefix(words[w:k * stride:stride].tobytes(), k)
    return k


# -- the check ----------------------------------------------------------------------------------
class TableCheck:
    """One check of one device's tables, on a socket of its own: drift repairs and programming
    on KernelTables' socket never wait behind it.  Use as an async context manager."""

    RCVBUF = 8 * 1024 * 1024

    def __init__(self, ifindex: int, netns: str | None, *, dev_port: int, src_vni: int | None = None) -> None:
        self.ifindex = ifindex
        self.netns = netns
        self.dev_port = dev_port
        self.src_vni = src_vni
        self._sock: socket.socket | None = None
        self._lent = None
        self._seq = 0

    async def __aenter__(self) -> "TableCheck":
        self._sock = open_route_socket(self.netns, rcvbuf=self.RCVBUF, ext_ack=True, strict=True)
        self._lent = _BUFFERS.take()
        return self

    async def __aexit__(self, *exc) -> None:
        if self._lent is not None:
            _BUFFERS.give(self._lent)
            self._lent = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- public
    async def fdb_dump(self) -> Tally:
        """Every remote FDB entry of the device (dump_fdb's filter)."""
        req = NDMSG.pack(AF_BRIDGE, self.ifindex, 0, 0, 0)
        return await self._dump(req, self._fdb_datagram)

    async def neigh_dump(self) -> Tally:
        """Every IPv4 and IPv6 neighbour of the device (dump_neigh's filter)."""
        out = Tally()
        for family in (AF_INET, AF_INET6):
            req = NDMSG.pack(family, 0, 0, 0, 0) + _attr(NDA_IFINDEX, struct.pack("=I", self.ifindex))
            out = out + await self._dump(req, self._neigh_datagram)
        return out

    async def fdb_get(self, macs: bytes) -> Tally:
        """The FDB entry (its first remote) of each MAC in `macs` (6 bytes each), one RTM_GETNEIGH
        each; a MAC without an entry counts in `missing`."""
        body = NDMSG.pack(AF_BRIDGE, self.ifindex, 0, NTF_SELF, 0)
        tail = b"" if self.src_vni is None else _attr(NDA_VNI, struct.pack("=I", self.src_vni))
        mlen = NLH.size + len(body) + 12 + len(tail)
        seq = self._next_seq()
        template = NLH.pack(mlen, RTM_GETNEIGH, NLM_F_REQUEST, seq, 0) + body + NLA.pack(10, NDA_LLADDR) + bytes(8) + tail
        mac_at = NLH.size + len(body) + 4
        loop = asyncio.get_running_loop()
        sock = self._sock
        # one datagram per reply: they are read one after the other into one buffer and walked
        # together, so that runs of one layout form (a 64 KiB receive each would be walked alone)
        big = bytearray(_GET_CHUNK * 256 + 65536)
        view = memoryview(big)
        out = Tally()
        total = len(macs) // 6
        for first in range(0, total, _GET_CHUNK):
            k = min(_GET_CHUNK, total - first)
            req = bytearray(template * k)
            part = macs[first * 6:(first + k) * 6]
            for j in range(6):  # the MACs' bytes into every request at once (strided slices)
                req[mac_at + j::mlen] = part[j::6]
            await loop.sock_sendall(sock, req)
            pos = 0
            for _ in range(k):
                if len(big) - pos < 65536:
                    raise KmodError("RTM_GETNEIGH replies larger than expected")
                try:
                    pos += sock.recv_into(view[pos:])
                except BlockingIOError:
                    pos += await loop.sock_recv_into(sock, view[pos:])
            self._fdb_datagram(view, pos, seq, out, get=True)
            await asyncio.sleep(0)
        return out

    # -- internals
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    async def _dump(self, payload: bytes, on_datagram, retries: int = 5) -> Tally:
        loop = asyncio.get_running_loop()
        sock = self._sock
        buf, view = self._lent
        for _attempt in range(retries):
            seq = self._next_seq()
            req = NLH.pack(NLH.size + len(payload), RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + payload
            await loop.sock_sendall(sock, req)
            out = Tally()
            interrupted = done = False
            while not done:
                n = await loop.sock_recv_into(sock, buf)
                done, intr, _ = on_datagram(view, n, seq, out)
                interrupted |= intr
                await asyncio.sleep(0)  # ~470 entries a datagram: the loop turns every ~0.1 ms of work
            if not interrupted:
                return out
        raise KmodError("netlink dump kept being interrupted (NLM_F_DUMP_INTR)")

    def _walk(self, view: memoryview, n: int, seq: int, out: Tally, keys, ignored, one, many, get: bool = False):
        """(done, interrupted, replies) for one datagram: runs of one layout through `many`, any
        other message through `one`."""
        done = interrupted = False
        replies = 0
        off = 0
        while off + NLH.size <= n and not done:
            mlen, mtype, mflags, mseq, _pid = NLH.unpack_from(view, off)
            if mlen < NLH.size or off + mlen > n:
                break
            if mseq != seq:
                off += (mlen + 3) & ~3
                continue
            if mflags & NLM_F_DUMP_INTR:
                interrupted = True
            if get and mtype == NLMSG_ERROR and _parse_error(view, off, mlen, mflags)[0] == _errno.ENOENT:
                out.missing += 1  # a GET of an entry that is not there
                replies += 1
                off += (mlen + 3) & ~3
                continue
            if mtype == NLMSG_DONE or mtype == NLMSG_ERROR:
                _raise_if_error(view, off, mlen, mtype, mflags, "get" if get else "dump")
                done = True
                break
            k = _run_length(view, off, n, mlen) if mtype == RTM_NEWNEIGH and mlen % 4 == 0 else 1
            layout = _layout(view, off, mlen, keys, ignored) if k > 1 else None
            if layout is not None:
                k = _uniform(view[off:off + k * mlen].cast("I"), k, layout)
            if k > 1 and one(view, off, mlen, mtype, None) is True:
                many(view[off:off + k * mlen], layout, out)  # the first is varpd's and passes the filter: all do
            else:  # someone else's or filtered out (a filter may read a varying field): one by one
                for i in range(k):
                    one(view, off + i * mlen, mlen, mtype, out)
            replies += k
            off += k * mlen if k > 1 else (mlen + 3) & ~3
        return done, interrupted, replies

    # FDB
    def _fdb_datagram(self, view, n, seq, out, get: bool = False):
        return self._walk(view, n, seq, out, _FDB_KEYS, _FDB_IGNORED, self._fdb_one, self._fdb_many, get)

    def _fdb_one(self, view, off, mlen, mtype, out: Tally | None):
        """dump_fdb's filter for one message; into `out` (None: only say whether it is varpd's)."""
        head = _neigh_header(view, off, mlen, mtype)
        if head is None:
            return None
        family, ifindex, _state, flags = head
        if family != AF_BRIDGE or ifindex != self.ifindex or not flags & NTF_SELF or flags & NTF_MASTER:
            return None
        found = _neigh_addresses(view, off, mlen)
        if found is None:
            return None
        mac, ip, attrs = found
        if self.src_vni is not None and _u32_or_zero(attrs.get(NDA_SRC_VNI)) != self.src_vni:
            return None
        port_raw = attrs.get(NDA_PORT)
        port = struct.unpack(">H", port_raw)[0] if port_raw is not None and len(port_raw) == 2 else self.dev_port
        owned = fdb_owned(flags, attrs.get(NDA_PROTOCOL))
        return owned if out is None else out.put(owned, (mac, int(ip), ip.version, port), mac)

    def _fdb_many(self, run: memoryview, layout: _Layout, out: Tally) -> None:
        cols = list(zip(*layout.fmt.iter_unpack(run)))
        k = len(cols[0])
        by = dict(zip(layout.fields, cols))
        ports = by.get(NDA_PORT, repeat(self.dev_port, k))
        keys = zip(map(bytes.hex, by[NDA_LLADDR], repeat(":")), map(int.from_bytes, by[NDA_DST], repeat("big")),
                   repeat(4 if layout.dst_len == 4 else 6, k), ports)
        out.add(list(map(hash, keys)))

    # neighbours
    def _neigh_datagram(self, view, n, seq, out):
        return self._walk(view, n, seq, out, _NEIGH_KEYS, _NEIGH_IGNORED, self._neigh_one, self._neigh_many)

    def _neigh_one(self, view, off, mlen, mtype, out: Tally | None):
        """dump_neigh's filter for one message."""
        head = _neigh_header(view, off, mlen, mtype)
        if head is None:
            return None
        family, ifindex, state, flags = head
        if ifindex != self.ifindex or family not in (AF_INET, AF_INET6):
            return None
        if not state & _NEIGH_STATES or flags & NTF_PROXY:
            return None
        found = _neigh_addresses(view, off, mlen)
        if found is None or found[1].is_multicast:
            return None
        mac, ip, attrs = found
        owned = neigh_owned(attrs.get(NDA_PROTOCOL))
        return owned if out is None else out.put(owned, (int(ip), ip.version, mac), ip)

    def _neigh_many(self, run: memoryview, layout: _Layout, out: Tally) -> None:
        cols = list(zip(*layout.fmt.iter_unpack(run)))
        k = len(cols[0])
        by = dict(zip(layout.fields, cols))
        keys = zip(map(int.from_bytes, by[NDA_DST], repeat("big")), repeat(4 if layout.dst_len == 4 else 6, k),
                   map(bytes.hex, by[NDA_LLADDR], repeat(":")))
        out.add(list(map(hash, keys)))
