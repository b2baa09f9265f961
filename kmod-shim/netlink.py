"""Raw NETLINK_ROUTE codec and batched FDB / neighbour programming.

No pyroute2 here: messages are packed with :mod:`struct`, many requests go
into one ``send`` and the kernel's ACKs are matched back to the entries by
sequence number.  rtnetlink processes a request skb synchronously inside
``sendmsg``, so once ``send`` returns every ACK of that chunk is either queued
on our socket or was dropped because the receive buffer was full (ENOBUFS).
The chunk size is bounded so that its ACKs fit into the receive buffer.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno as _errno
import os
import socket
import struct
import time
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Callable, Iterable, Iterator

from ._netns import run_in_netns
from .types import FdbEntry, KmodError, NeighEntry, OpFailure

# --- constants (linux/netlink.h, linux/rtnetlink.h, linux/neighbour.h) -------
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_APPEND = 0x800
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
# flags on NLMSG_ERROR messages
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1

RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
RTM_GETNEIGH = 30

RTNLGRP_NEIGH = 3
RTMGRP_NEIGH = 1 << (RTNLGRP_NEIGH - 1)
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100

IFA_ADDRESS = 1
IFA_LOCAL = 2

NDA_DST = 1
NDA_LLADDR = 2
NDA_CACHEINFO = 3
NDA_PROBES = 4
NDA_VLAN = 5
NDA_PORT = 6
NDA_VNI = 7
NDA_IFINDEX = 8
NDA_MASTER = 9
NDA_SRC_VNI = 11  # u32: the VNI an FDB entry of an external (collect-metadata) device belongs to (4.11)
NDA_PROTOCOL = 12  # u8, who installed the entry (5.0); the VXLAN FDB ignores it up to 6.18 at least

NTF_USE = 0x01
NTF_SELF = 0x02
NTF_MASTER = 0x04
NTF_PROXY = 0x08
NTF_EXT_LEARNED = 0x10
NTF_ROUTER = 0x80

NUD_INCOMPLETE = 0x01
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_DELAY = 0x08
NUD_PROBE = 0x10
NUD_FAILED = 0x20
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80

IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_VXLAN_ID = 1
IFLA_VXLAN_PORT = 15

AF_UNSPEC = 0
AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6
AF_BRIDGE = 7

NLH = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
NLA = struct.Struct("=HH")  # len, type
NLA_TYPE_MASK = 0x3FFF
_I32 = struct.Struct("=i")
_BE16 = struct.Struct("!H")

ADD_FLAGS = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
# The VXLAN driver refuses NLM_F_REPLACE for all-zeros and multicast MACs (EOPNOTSUPP):
# those default/BUM destinations can only be appended (a no-op if the remote exists).
APPEND_FLAGS = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND
DEL_FLAGS = NLM_F_REQUEST | NLM_F_ACK

ZERO_MAC = b"\x00" * 6

# varpd's mark on the entries it programs, like zebra's RTPROT_ZEBRA (11): a number no protocol in
# linux/rtnetlink.h or FRR's rt_netlink.h uses ('v'); configs/rt_protos.d/varpd.conf names it.
VARPD_PROTOCOL = 118

__all__ = [
    "KernelTables",
    "VARPD_PROTOCOL",
    "fdb_owned",
    "neigh_owned",
    "encode_fdb",
    "encode_neigh",
    "encode_port_fdb",
    "mac_to_bytes",
    "bytes_to_mac",
    "open_route_socket",
    "parse_attrs",
]


# --- small helpers ------------------------------------------------------------
def mac_to_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"invalid MAC address {mac!r}")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"invalid MAC address {mac!r}") from None
    return raw


def bytes_to_mac(raw: bytes | memoryview) -> str:
    return bytes(raw).hex(":")


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(atype: int, payload: bytes) -> bytes:
    n = NLA.size + len(payload)
    return NLA.pack(n, atype) + payload + b"\x00" * (_align(n) - n)


_PROTO_ATTR = _attr(NDA_PROTOCOL, bytes([VARPD_PROTOCOL]))


def parse_attrs(buf, start: int, end: int) -> dict[int, memoryview]:
    """Parse a run of rtattrs into {type: payload memoryview} (last wins)."""
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    out: dict[int, memoryview] = {}
    off = start
    while off + 4 <= end:
        alen, atype = NLA.unpack_from(mv, off)
        if alen < 4 or off + alen > end:
            break
        out[atype & NLA_TYPE_MASK] = mv[off + 4 : off + alen]
        off += _align(alen)
    return out


def _ip_from_raw(raw) -> IPv4Address | IPv6Address | None:
    n = len(raw)
    if n == 4:
        return IPv4Address(bytes(raw))
    if n == 16:
        return IPv6Address(bytes(raw))
    return None


def _u32_or_zero(raw) -> int:
    """A u32 attribute's value; 0 when absent (the kernel omits NDA_SRC_VNI for VNI 0)."""
    return struct.unpack("=I", raw)[0] if raw is not None and len(raw) == 4 else 0


def _as_ip(value) -> IPv4Address | IPv6Address:
    if isinstance(value, (IPv4Address, IPv6Address)):
        return value
    return ip_address(value)


# --- dump parsing ------------------------------------------------------------------
def _neigh_header(buf, off: int, mlen: int, mtype: int) -> tuple[int, int, int, int] | None:
    """(family, ifindex, state, flags) of an RTM_NEWNEIGH message, or None for anything else."""
    if mtype != RTM_NEWNEIGH or mlen < NLH.size + NDMSG.size:
        return None
    family, ifindex, state, flags, _t = NDMSG.unpack_from(buf, off + NLH.size)
    return family, ifindex, state, flags


def _neigh_addresses(buf, off: int, mlen: int):
    """(mac, ip, attrs) of a neighbour message with a 6-byte lladdr and a dst, else None."""
    attrs = parse_attrs(buf, off + NLH.size + NDMSG.size, off + mlen)
    lladdr = attrs.get(NDA_LLADDR)
    dst = attrs.get(NDA_DST)
    if lladdr is None or dst is None or len(lladdr) != 6:
        return None
    ip = _ip_from_raw(dst)
    if ip is None:
        return None
    return bytes(lladdr).hex(":"), ip, attrs


# --- encoders -------------------------------------------------------------------
def fdb_owned(flags: int, proto) -> bool:
    """Is a VXLAN FDB entry varpd's?  Its NDA_PROTOCOL says so where the kernel keeps one; the
    VXLAN FDB of 6.18 drops NDA_PROTOCOL, so there NTF_EXT_LEARNED is the mark (as zebra's EVPN
    entries carry it).  A hand-added entry (`bridge fdb add`) has neither; `bridge fdb replace`
    of varpd's entry clears NTF_EXT_LEARNED, so a hand-changed entry is no longer varpd's."""
    if proto is not None and len(proto) == 1:
        return proto[0] == VARPD_PROTOCOL
    return bool(flags & NTF_EXT_LEARNED)


def neigh_owned(proto) -> bool:
    """Is a neighbour entry varpd's?  Neighbour tables keep NDA_PROTOCOL (kernel 5.0)."""
    return proto is not None and len(proto) == 1 and proto[0] == VARPD_PROTOCOL


def encode_fdb(ifindex: int, entry: FdbEntry, seq: int, *, add: bool = True, vni: int | None = None,
               whole: bool = False, src_vni: int | None = None) -> bytes:
    """RTM_NEWNEIGH/RTM_DELNEIGH for a VXLAN FDB entry (AF_BRIDGE, NTF_SELF).

    An add is marked as varpd's (NTF_EXT_LEARNED and NDA_PROTOCOL, see fdb_owned).  A delete
    with `whole` names only the MAC: every remote of it goes, whatever its destination.
    `vni` is NDA_VNI, the VNI the packet is sent with (`bridge fdb ... vni N`); `src_vni` is
    NDA_SRC_VNI, the VNI whose table the entry is in on a shared (external) device
    (`bridge fdb ... src_vni N`).  Without it such a device files the entry under VNI 0."""
    lladdr = mac_to_bytes(entry.mac)
    tail = b"" if src_vni is None else _attr(NDA_SRC_VNI, struct.pack("=I", src_vni))
    if not add and whole:
        body = NDMSG.pack(AF_BRIDGE, ifindex, 0, NTF_SELF, 0) + _attr(NDA_LLADDR, lladdr) + tail
        return NLH.pack(NLH.size + len(body), RTM_DELNEIGH, DEL_FLAGS, seq, 0) + body
    dst = _as_ip(entry.dst)
    if not 0 < int(entry.port) < 65536:
        raise ValueError(f"invalid port {entry.port!r}")
    ntf = NTF_SELF | NTF_EXT_LEARNED if add else NTF_SELF
    body = (
        NDMSG.pack(AF_BRIDGE, ifindex, NUD_PERMANENT, ntf, 0)
        + _attr(NDA_LLADDR, lladdr)
        + _attr(NDA_DST, dst.packed)
        + _attr(NDA_PORT, _BE16.pack(int(entry.port)))
    )
    if vni is not None:
        body += _attr(NDA_VNI, struct.pack("=I", vni))
    body += tail
    if not add:
        mtype, flags = RTM_DELNEIGH, DEL_FLAGS
    elif lladdr == ZERO_MAC or lladdr[0] & 1:
        mtype, flags = RTM_NEWNEIGH, APPEND_FLAGS
    else:
        mtype, flags = RTM_NEWNEIGH, ADD_FLAGS
    if add:
        body += _PROTO_ATTR
    return NLH.pack(NLH.size + len(body), mtype, flags, seq, 0) + body


def encode_neigh(ifindex: int, entry: NeighEntry, seq: int, *, add: bool = True) -> bytes:
    """RTM_NEWNEIGH/RTM_DELNEIGH for a plain permanent neighbour entry on the device, marked as
    varpd's with NDA_PROTOCOL (a replace sets the protocol of an existing entry too)."""
    ip = _as_ip(entry.ip)
    family = AF_INET if ip.version == 4 else AF_INET6
    if add:
        body = (
            NDMSG.pack(family, ifindex, NUD_PERMANENT, 0, 0)
            + _attr(NDA_DST, ip.packed)
            + _attr(NDA_LLADDR, mac_to_bytes(entry.mac))
            + _PROTO_ATTR
        )
        return NLH.pack(NLH.size + len(body), RTM_NEWNEIGH, ADD_FLAGS, seq, 0) + body
    body = NDMSG.pack(family, ifindex, 0, 0, 0) + _attr(NDA_DST, ip.packed)
    return NLH.pack(NLH.size + len(body), RTM_DELNEIGH, DEL_FLAGS, seq, 0) + body


def encode_port_fdb(port_ifindex: int, mac: str, seq: int, *, add: bool = True) -> bytes:
    """RTM_NEWNEIGH/RTM_DELNEIGH for a static bridge FDB entry (NTF_MASTER) of `mac` behind a bridge
    port: the bridge's neigh_suppress answers ARP/NS only for a MAC it knows behind a port that
    suppresses. Static (NUD_NOARP), never permanent: a permanent one is the bridge's own address."""
    body = NDMSG.pack(AF_BRIDGE, port_ifindex, NUD_NOARP, NTF_MASTER, 0) + _attr(NDA_LLADDR, mac_to_bytes(mac))
    mtype, flags = (RTM_NEWNEIGH, ADD_FLAGS) if add else (RTM_DELNEIGH, DEL_FLAGS)
    return NLH.pack(NLH.size + len(body), mtype, flags, seq, 0) + body


def _messages(view: memoryview, n: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(offset, length, type, flags, seq) of each whole netlink message in the first `n` bytes.

    The miss listener keeps its own inline walk: it is the per-miss hot path.
    """
    off = 0
    while off + NLH.size <= n:
        mlen, mtype, mflags, seq, _pid = NLH.unpack_from(view, off)
        if mlen < NLH.size or off + mlen > n:
            return
        yield off, mlen, mtype, mflags, seq
        off += _align(mlen)


def _raise_if_error(view: memoryview, off: int, mlen: int, mtype: int, mflags: int, what: str) -> None:
    """A dump's or get's end: an NLMSG_ERROR carrying an errno raises KmodError naming it
    (NLMSG_DONE, or an NLMSG_ERROR carrying 0, an ack, is a plain end)."""
    if mtype == NLMSG_ERROR:
        code, text = _parse_error(view, off, mlen, mflags)
        if code:
            raise KmodError(f"netlink {what} failed: {os.strerror(code)} {text}".strip())


def _parse_error(buf: memoryview, off: int, mlen: int, mflags: int) -> tuple[int, str]:
    """Return (positive errno, extended-ack message) of an NLMSG_ERROR message."""
    (err,) = _I32.unpack_from(buf, off + 16)
    code = -err
    msg = ""
    if mflags & NLM_F_ACK_TLVS:
        # nlmsgerr = int error + struct nlmsghdr msg (+ payload unless capped)
        inner = off + 20
        if mflags & NLM_F_CAPPED:
            tlv = inner + 16
        else:
            (ilen,) = struct.unpack_from("=I", buf, inner)
            tlv = inner + _align(ilen)
        attrs = parse_attrs(buf, tlv, off + mlen)
        raw = attrs.get(NLMSGERR_ATTR_MSG)
        if raw is not None:
            msg = bytes(raw).split(b"\x00", 1)[0].decode("utf-8", "replace")
    return code, msg


# --- sockets --------------------------------------------------------------------
def _set_rcvbuf(sock: socket.socket, size: int) -> None:
    try:
        rmem_max = int(open("/proc/sys/net/core/rmem_max").read())
    except OSError:
        rmem_max = 212992
    if size > rmem_max:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
            return
        except PermissionError:
            pass
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def open_route_socket(
    netns: str | None = None,
    *,
    groups: int = 0,
    rcvbuf: int | None = None,
    ext_ack: bool = True,
    strict: bool = False,
) -> socket.socket:
    """Open a non-blocking NETLINK_ROUTE socket (inside ``netns`` if given)."""

    def make() -> socket.socket:
        s = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            NETLINK_ROUTE,
        )
        try:
            if rcvbuf is not None:
                _set_rcvbuf(s, rcvbuf)
            if ext_ack:
                for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                    try:
                        s.setsockopt(SOL_NETLINK, opt, 1)
                    except OSError:
                        pass
            if strict:
                try:
                    s.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
                except OSError:
                    pass
            s.bind((0, groups))
        except BaseException:
            s.close()
            raise
        return s

    return run_in_netns(netns, make)


# --- KernelTables -------------------------------------------------------------
# The kernel puts at most 32 KiB in one netlink datagram (a dump's skb is capped at
# SKB_WITH_OVERHEAD(32768); ACKs are capped by NETLINK_CAP_ACK): a receive buffer of
# twice that never truncates one (a 20k-entry dump's largest was 32,436 bytes).
RECV_BUFFER = 64 * 1024


class _BufferPool:
    """Receive buffers lent to whichever KernelTables is working: a thousand overlays, mostly
    idle, share the few that run at once instead of holding one each (1 MiB each, before)."""

    def __init__(self) -> None:
        self._free: list[tuple[bytearray, memoryview]] = []

    def take(self) -> tuple[bytearray, memoryview]:
        if self._free:
            return self._free.pop()
        buf = bytearray(RECV_BUFFER)
        return buf, memoryview(buf)

    def give(self, lent: tuple[bytearray, memoryview]) -> None:
        self._free.append(lent)


_BUFFERS = _BufferPool()


class _LendingLock:
    """The instance's lock; whoever holds it holds a receive buffer (`_buf`, `_view`) too."""

    __slots__ = ("_lock", "_owner")

    def __init__(self, owner: "KernelTables") -> None:
        self._lock = asyncio.Lock()
        self._owner = owner

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        self._owner._buf, self._owner._view = _BUFFERS.take()

    async def __aexit__(self, *exc) -> None:
        owner = self._owner
        _BUFFERS.give((owner._buf, owner._view))
        owner._buf = owner._view = None
        self._lock.release()


class KernelTables:
    """Batched programming of one VXLAN device's FDB and neighbour tables.

    One netlink socket per instance (a dump of one overlay never waits behind another's);
    operations are serialised with a lock, and hold a receive buffer from a shared pool
    only while they run.  With `src_vni` the instance is one VNI's view of a shared
    (external + vnifilter) device: every FDB entry it programs carries NDA_SRC_VNI and its
    dumps see only that VNI's entries.
    """

    CHUNK_BYTES = 64 * 1024
    DUMP_SLICE = 0.002  # seconds of dump parsing between two turns of the event loop
    RCVBUF = 8 * 1024 * 1024
    ACK_TRUESIZE = 1024  # conservative kernel memory charged per queued ACK skb

    def __init__(self, ifindex: int, netns: str | None = None, *, src_vni: int | None = None) -> None:
        self.ifindex = int(ifindex)
        self.src_vni = src_vni
        self.netns = netns
        self._sock = open_route_socket(netns, rcvbuf=self.RCVBUF, ext_ack=True, strict=True)
        actual = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # keep the ACKs of one chunk well inside the receive buffer
        self._chunk_msgs = max(16, min(4096, actual // (2 * self.ACK_TRUESIZE)))
        self._buf: bytearray | None = None  # lent by _BUFFERS while the lock is held
        self._view: memoryview | None = None
        self._seq = 0
        self._lock = _LendingLock(self)
        self._dev_port: int | None = None
        self.closed = False

    # -- lifecycle
    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sock.close()

    def __enter__(self) -> "KernelTables":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> "KernelTables":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    # -- public API
    async def add_fdb(self, entries: Iterable[FdbEntry]) -> list[OpFailure]:
        return await self._batch(
            entries, lambda e, s: encode_fdb(self.ifindex, e, s, add=True, src_vni=self.src_vni), ()
        )

    async def del_fdb(self, entries: Iterable[FdbEntry]) -> list[OpFailure]:
        return await self._batch(
            entries, lambda e, s: encode_fdb(self.ifindex, e, s, add=False, src_vni=self.src_vni), (_errno.ENOENT,)
        )

    async def add_neigh(self, entries: Iterable[NeighEntry]) -> list[OpFailure]:
        return await self._batch(entries, lambda e, s: encode_neigh(self.ifindex, e, s, add=True), ())

    async def del_neigh(self, entries: Iterable[NeighEntry]) -> list[OpFailure]:
        return await self._batch(
            entries, lambda e, s: encode_neigh(self.ifindex, e, s, add=False), (_errno.ENOENT,)
        )

    async def take_fdb(self, entries: Iterable[FdbEntry]) -> list[OpFailure]:
        """Program `entries` in place of kernel entries of their MACs that are not varpd's.

        The VXLAN driver keeps the flags of an entry added without NTF_EXT_LEARNED when a
        replace carries it, so such an entry cannot be re-marked in place: each MAC is deleted
        (every remote) and added again, the two requests next to each other in one send."""
        ops: list[tuple[FdbEntry, bool]] = []
        seen: set[str] = set()
        for e in entries:
            if e.mac not in seen:
                seen.add(e.mac)
                ops.append((e, False))
            ops.append((e, True))
        failures = await self._batch(
            ops, lambda op, s: encode_fdb(self.ifindex, op[0], s, add=op[1], whole=not op[1], src_vni=self.src_vni),
            (_errno.ENOENT,)
        )
        return [OpFailure(f.entry[0], f.errno, f.message) for f in failures]

    def checker(self):
        """A TableCheck of this device (varpd_kmod.tablecheck), on a socket of its own."""
        from .tablecheck import TableCheck

        return TableCheck(self.ifindex, self.netns, dev_port=self.dev_port, src_vni=self.src_vni)

    @property
    def dev_port(self) -> int:
        """The device's UDP port: what an FDB entry (or event) without NDA_PORT goes to."""
        return self._dev_port or 4789

    async def dump_fdb(self) -> dict[FdbEntry, bool]:
        """Remote FDB entries of this VXLAN device (NTF_SELF, with NDA_DST) → whether each is
        varpd's (fdb_owned), the all-zeros default destination included: a reconciler must see
        (and remove) a stray one of its own, since it silences L2 misses and floods broadcast."""
        if self._dev_port is None:
            async with self._lock:
                self._dev_port = await self._query_vxlan_port()
        async with self._dump_socket() as io:
            default_port = self._dev_port or 4789
            out: dict[FdbEntry, bool] = {}
            req = NDMSG.pack(AF_BRIDGE, self.ifindex, 0, 0, 0)

            def on_msg(buf: memoryview, off: int, mlen: int, mtype: int) -> None:
                head = _neigh_header(buf, off, mlen, mtype)
                if head is None:
                    return
                family, ifindex, _state, flags = head
                if family != AF_BRIDGE or ifindex != self.ifindex or not flags & NTF_SELF or flags & NTF_MASTER:
                    return
                found = _neigh_addresses(buf, off, mlen)
                if found is None:
                    return
                mac, ip, attrs = found
                if self.src_vni is not None and _u32_or_zero(attrs.get(NDA_SRC_VNI)) != self.src_vni:
                    return  # another VNI's entry on a shared device
                port_raw = attrs.get(NDA_PORT)
                port = _BE16.unpack(port_raw)[0] if port_raw is not None and len(port_raw) == 2 else default_port
                out[FdbEntry(mac, ip, port)] = fdb_owned(flags, attrs.get(NDA_PROTOCOL))

            await self._dump(RTM_GETNEIGH, req, on_msg, reset=out.clear, io=io)
            return out

    async def add_port_fdb(self, macs: Iterable[str]) -> list[OpFailure]:
        """Static bridge FDB entries for `macs` behind this device's bridge port (see encode_port_fdb)."""
        return await self._batch(macs, lambda m, s: encode_port_fdb(self.ifindex, m, s, add=True), ())

    async def del_port_fdb(self, macs: Iterable[str]) -> list[OpFailure]:
        return await self._batch(macs, lambda m, s: encode_port_fdb(self.ifindex, m, s, add=False), (_errno.ENOENT,))

    async def dump_port_fdb(self) -> set[str]:
        """MACs of the static (not permanent, not learned) bridge FDB entries behind this device's port."""
        async with self._lock:
            out: set[str] = set()

            def on_msg(buf: memoryview, off: int, mlen: int, mtype: int) -> None:
                head = _neigh_header(buf, off, mlen, mtype)
                if head is None:
                    return
                family, ifindex, state, flags = head
                # the bridge's own entries carry NDA_MASTER (their ndm_flags have no NTF_MASTER)
                if family != AF_BRIDGE or ifindex != self.ifindex or flags & (NTF_SELF | NTF_EXT_LEARNED):
                    return
                if not state & NUD_NOARP or state & NUD_PERMANENT:
                    return
                attrs = parse_attrs(buf, off + NLH.size + NDMSG.size, off + mlen)
                lladdr = attrs.get(NDA_LLADDR) if NDA_MASTER in attrs else None
                if lladdr is not None and len(lladdr) == 6:
                    out.add(bytes(lladdr).hex(":"))

            await self._dump(RTM_GETNEIGH, NDMSG.pack(AF_BRIDGE, self.ifindex, 0, 0, 0), on_msg, reset=out.clear)
            return out

    async def dump_neigh(self) -> dict[NeighEntry, bool]:
        """Connected (PERMANENT/NOARP/REACHABLE) IPv4+IPv6 neighbours with lladdr on this device
        → whether each is varpd's (neigh_owned)."""
        async with self._dump_socket() as io:
            out: dict[NeighEntry, bool] = {}
            wanted = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE

            def on_msg(buf: memoryview, off: int, mlen: int, mtype: int) -> None:
                head = _neigh_header(buf, off, mlen, mtype)
                if head is None:
                    return
                family, ifindex, state, flags = head
                if ifindex != self.ifindex or family not in (AF_INET, AF_INET6):
                    return
                if not state & wanted or flags & NTF_PROXY:
                    return
                found = _neigh_addresses(buf, off, mlen)
                if found is None or found[1].is_multicast:
                    return
                out[NeighEntry(found[1], found[0])] = neigh_owned(found[2].get(NDA_PROTOCOL))

            for family in (AF_INET, AF_INET6):
                req = NDMSG.pack(family, 0, 0, 0, 0) + _attr(NDA_IFINDEX, struct.pack("=I", self.ifindex))
                before = dict(out)

                def reset(before=before) -> None:  # a retried (interrupted) dump
                    out.clear()
                    out.update(before)

                await self._dump(RTM_GETNEIGH, req, on_msg, reset=reset, io=io)
            return out

    # -- internals
    async def _batch(
        self,
        entries: Iterable[object],
        encode: Callable[[object, int], bytes],
        ignore: tuple[int, ...],
    ) -> list[OpFailure]:
        if self.closed:
            raise KmodError("KernelTables is closed")
        failures: list[OpFailure] = []
        async with self._lock:
            chunk = bytearray()
            pending: dict[int, object] = {}
            limit_b, limit_n = self.CHUNK_BYTES, self._chunk_msgs
            for entry in entries:
                seq = self._next_seq()
                try:
                    msg = encode(entry, seq)
                except (ValueError, TypeError, AttributeError, struct.error) as exc:
                    failures.append(OpFailure(entry, _errno.EINVAL, f"cannot encode: {exc}"))
                    continue
                if pending and (len(chunk) + len(msg) > limit_b or len(pending) >= limit_n):
                    await self._flush(chunk, pending, failures, ignore)
                    chunk = bytearray()
                    pending = {}
                chunk += msg
                pending[seq] = entry
            if pending:
                await self._flush(chunk, pending, failures, ignore)
        return failures

    async def _flush(
        self,
        chunk: bytearray,
        pending: dict[int, object],
        failures: list[OpFailure],
        ignore: tuple[int, ...],
    ) -> None:
        loop = asyncio.get_running_loop()
        sock = self._sock
        await loop.sock_sendall(sock, chunk)
        buf = self._buf
        lost = False
        while pending:
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                try:
                    n = await loop.sock_recv_into(sock, buf)
                except OSError as exc:
                    if exc.errno != _errno.ENOBUFS:
                        raise
                    lost = True
                    break
            except OSError as exc:
                if exc.errno != _errno.ENOBUFS:
                    raise
                lost = True
                break
            self._match_acks(n, pending, failures, ignore)
        if lost:
            # The kernel has processed the whole chunk already; drain what is queued.
            while pending:
                try:
                    n = sock.recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno == _errno.ENOBUFS:
                        continue
                    raise
                self._match_acks(n, pending, failures, ignore)
            for entry in pending.values():
                failures.append(
                    OpFailure(entry, _errno.ENOBUFS, "ACK lost (receive buffer overflow): outcome unknown")
                )
            pending.clear()
        # let other tasks (the miss hot path) run between chunks
        await asyncio.sleep(0)

    def _match_acks(self, n: int, pending: dict[int, object], failures: list[OpFailure],
                    ignore: tuple[int, ...]) -> None:
        """Match the ACKs in the first `n` bytes of the receive buffer to pending entries by sequence."""
        view = self._view
        for off, mlen, mtype, mflags, seq in _messages(view, n):
            if mtype == NLMSG_ERROR:
                entry = pending.pop(seq, None)
                if entry is not None:
                    code, text = _parse_error(view, off, mlen, mflags)
                    if code and code not in ignore:
                        failures.append(OpFailure(entry, code, text or os.strerror(code)))

    @contextlib.asynccontextmanager
    async def _dump_socket(self):
        """(socket, buffer, view) for one dump of the device's tables, none of them the instance's:
        programming and drift repairs go on while a full pass dumps a million entries (they waited
        for it behind the instance's lock, 157 s at 1M records)."""
        sock = open_route_socket(self.netns, ext_ack=True, strict=True)
        lent = _BUFFERS.take()
        try:
            yield sock, *lent
        finally:
            _BUFFERS.give(lent)
            sock.close()

    async def _dump(self, mtype: int, payload: bytes, on_msg, *, reset: Callable[[], None], retries: int = 5,
                    io: tuple | None = None) -> None:
        """`io`: (socket, buffer, view) of _dump_socket; else the instance's (its lock held)."""
        loop = asyncio.get_running_loop()
        sock, buf, view = io if io is not None else (self._sock, self._buf, self._view)
        for _attempt in range(retries):
            seq = self._next_seq()
            req = NLH.pack(NLH.size + len(payload), mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + payload
            await loop.sock_sendall(sock, req)
            interrupted = False
            done = False
            started = time.perf_counter()
            while not done:
                # the kernel makes each part of a dump inside recv(), where sock_recv_into does not
                # yield either: at 100k entries with a bridge's as many (flooding) one receive is
                # ~50 ms of kernel time, and the parsing's slices alone held the loop up to 2.9 s
                if time.perf_counter() - started > self.DUMP_SLICE:
                    await asyncio.sleep(0)
                    started = time.perf_counter()
                n = await loop.sock_recv_into(sock, buf)
                for k, (off, mlen, t, mflags, mseq) in enumerate(_messages(view, n)):
                    # sock_recv_into returns without yielding while data is queued, and one
                    # receive holds ~450 entries: a dump of 1M would hold the loop for seconds.
                    # The loop gets a turn every DUMP_SLICE s (the buffer is ours: the instance's
                    # lock is held, or it is lent to this dump alone)
                    if k & 63 == 0 and time.perf_counter() - started > self.DUMP_SLICE:
                        await asyncio.sleep(0)
                        started = time.perf_counter()
                    if mseq != seq:
                        continue
                    if mflags & NLM_F_DUMP_INTR:
                        interrupted = True
                    if t == NLMSG_DONE or t == NLMSG_ERROR:
                        _raise_if_error(view, off, mlen, t, mflags, "dump")
                        done = True
                        break
                    on_msg(view, off, mlen, t)
            if not interrupted:
                return
            reset()
        raise KmodError("netlink dump kept being interrupted (NLM_F_DUMP_INTR)")

    async def _query_vxlan_port(self) -> int | None:
        loop = asyncio.get_running_loop()
        seq = self._next_seq()
        body = IFINFOMSG.pack(AF_UNSPEC, 0, self.ifindex, 0, 0)
        req = NLH.pack(NLH.size + len(body), RTM_GETLINK, NLM_F_REQUEST, seq, 0) + body
        await loop.sock_sendall(self._sock, req)
        buf, view = self._buf, self._view
        while True:
            n = await loop.sock_recv_into(self._sock, buf)
            for off, mlen, t, mflags, mseq in _messages(view, n):
                if mseq != seq:
                    continue
                if t == NLMSG_ERROR:
                    code, text = _parse_error(view, off, mlen, mflags)
                    raise KmodError(f"RTM_GETLINK ifindex {self.ifindex}: {os.strerror(code)} {text}".strip())
                if t == RTM_NEWLINK:
                    attrs = parse_attrs(view, off + NLH.size + IFINFOMSG.size, off + mlen)
                    li = attrs.get(IFLA_LINKINFO)
                    if li is None:
                        return None
                    info = parse_attrs(li, 0, len(li))
                    data = info.get(IFLA_INFO_DATA)
                    if data is None:
                        return None
                    vx = parse_attrs(data, 0, len(data))
                    p = vx.get(IFLA_VXLAN_PORT)
                    return _BE16.unpack(p)[0] if p is not None and len(p) == 2 else None
