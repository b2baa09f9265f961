"""Kernel miss events (VXLAN l2miss / l3miss) and entry changes from the RTMGRP_NEIGH group.

The VXLAN driver reports a miss as an ``RTM_GETNEIGH`` notification:

* L2 miss: ``NDA_LLADDR`` = the unknown destination MAC, no ``NDA_DST``;
* L3 miss: ``NDA_DST`` = the IP an ARP request / neighbour solicitation asked for.

The VXLAN driver builds miss notifications from an empty remote, so its
``NDA_VNI`` is 0: ``L2Miss.vni`` is None in that case (use the device's VNI).

With ``addresses=True`` the same socket also joins the IPv4/IPv6 address groups and yields an
:class:`AddressChange` per ``RTM_NEWADDR``/``RTM_DELADDR``: one socket per namespace tells the
daemon both what to resolve and when a VTEP's listen address appears or goes (no polling).

The same group announces every FDB and neighbour change (RTM_NEWNEIGH /
RTM_DELNEIGH), varpd's own included: for the devices given to ``watch_entries``
they are reported as :class:`FdbChange` / :class:`NeighChange`, so one socket
serves a whole daemon's misses and drift repair.  Changes of other devices
(bridge learning on guest ports, the host's own neighbours) are skipped on
their ifindex before anything is allocated.

This is the hot path: a raw netlink socket, one preallocated receive buffer,
``struct.unpack_from`` parsing, and one allocation per event (the event).
"""
from __future__ import annotations

import asyncio
import errno as _errno
import socket
import struct
from ipaddress import IPv4Address, IPv6Address
from typing import AsyncIterator

from .netlink import (
    AF_BRIDGE,
    IFA_ADDRESS,
    IFA_LOCAL,
    IFADDRMSG,
    NDA_DST,
    NDA_LLADDR,
    NDA_PORT,
    NDA_PROTOCOL,
    NDA_VNI,
    NDMSG,
    NLA,
    NLH,
    NTF_MASTER,
    NTF_PROXY,
    NTF_SELF,
    NUD_NOARP,
    NUD_PERMANENT,
    NUD_REACHABLE,
    RTM_DELADDR,
    RTM_DELNEIGH,
    RTM_GETNEIGH,
    RTM_NEWADDR,
    RTM_NEWNEIGH,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_NEIGH,
    fdb_owned,
    neigh_owned,
    open_route_socket,
    parse_attrs,
)
from .types import AddressChange, EventsLost, FdbChange, KmodError, L2Miss, L3Miss, NeighChange

__all__ = ["MissListener"]

_NDMSG_OFF = NLH.size
_ATTR_OFF = NLH.size + NDMSG.size
_U32 = struct.Struct("=I")
_BE16 = struct.Struct("!H")
_CONNECTED = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE

Event = L2Miss | L3Miss | FdbChange | NeighChange | EventsLost | AddressChange


def _ip(raw: bytes) -> IPv4Address | IPv6Address | None:
    if len(raw) == 4:
        return IPv4Address(raw)
    if len(raw) == 16:
        return IPv6Address(raw)
    return None


class MissListener:
    """Listen for VXLAN miss notifications in one network namespace.

    ``async for ev in listener.events()`` yields :class:`L2Miss`,
    :class:`L3Miss`, :class:`FdbChange` / :class:`NeighChange` of the devices
    given to ``watch_entries()`` and, after a receive-buffer overflow,
    :class:`EventsLost`.  With no ``watch()``-ed ifindex every device's misses are
    reported; entry changes only for ``watch_entries()``-ed ones.
    """

    def __init__(self, netns: str | None = None, rcvbuf: int = 8 * 1024 * 1024, *, addresses: bool = False) -> None:
        self.netns = netns
        groups = RTMGRP_NEIGH | (RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR if addresses else 0)
        # bound (and subscribed) right here, so nothing after construction is missed
        self._sock = open_route_socket(netns, groups=groups, rcvbuf=rcvbuf, ext_ack=False)
        self._buf = bytearray(256 * 1024)
        self._view = memoryview(self._buf)
        self._watch: set[int] = set()
        self._entries: set[int] = set()
        self.closed = False
        self.lost = 0  # number of ENOBUFS seen
        # read in the loop's readable callback, registered once: no epoll (un)registration per miss
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[Event] = []
        self._waiter: asyncio.Future | None = None
        self._error: BaseException | None = None

    @property
    def rcvbuf(self) -> int:
        return self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def fileno(self) -> int:
        return self._sock.fileno()

    def watch(self, ifindex: int) -> None:
        self._watch.add(int(ifindex))

    def unwatch(self, ifindex: int) -> None:
        self._watch.discard(int(ifindex))

    @property
    def watched(self) -> frozenset[int]:
        return frozenset(self._watch)

    def watch_entries(self, ifindex: int) -> None:
        """Report FDB / neighbour changes of this device (its misses are reported as before)."""
        self._entries.add(int(ifindex))

    def unwatch_entries(self, ifindex: int) -> None:
        self._entries.discard(int(ifindex))

    def set_entry_watch(self, ifindexes) -> None:
        """Report entry changes of exactly these devices."""
        self._entries = {int(i) for i in ifindexes}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._wake()

    def __enter__(self) -> "MissListener":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> "MissListener":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    # -- parsing -----------------------------------------------------------------
    def _parse(self, n: int, out: list[Event]) -> None:
        view = self._view
        watch = self._watch
        entries = self._entries
        off = 0
        while off + 16 <= n:
            mlen, mtype, _flags, _seq, _pid = NLH.unpack_from(view, off)
            if mlen < 16 or off + mlen > n:
                break
            end = off + mlen
            if mtype == RTM_GETNEIGH and mlen >= _ATTR_OFF:
                _family, ifindex, _state, _nflags, _t = NDMSG.unpack_from(view, off + _NDMSG_OFF)
                if not watch or ifindex in watch:
                    dst = lladdr = vni = None
                    a = off + _ATTR_OFF
                    while a + 4 <= end:
                        alen, atype = NLA.unpack_from(view, a)
                        if alen < 4 or a + alen > end:
                            break
                        atype &= 0x3FFF
                        if atype == NDA_DST:
                            dst = (a + 4, alen - 4)
                        elif atype == NDA_LLADDR:
                            lladdr = (a + 4, alen - 4)
                        elif atype == NDA_VNI and alen >= 8:
                            vni = _U32.unpack_from(view, a + 4)[0]
                        a += (alen + 3) & ~3
                    if dst is not None:
                        p, ln = dst
                        if ln == 4:
                            out.append(L3Miss(ifindex, IPv4Address(bytes(view[p : p + 4]))))
                        elif ln == 16:
                            out.append(L3Miss(ifindex, IPv6Address(bytes(view[p : p + 16]))))
                    elif lladdr is not None and lladdr[1] == 6:
                        p = lladdr[0]
                        out.append(L2Miss(ifindex, view[p : p + 6].hex(":"), vni or None))
            elif (mtype == RTM_NEWADDR or mtype == RTM_DELADDR) and mlen >= NLH.size + IFADDRMSG.size:
                out.append(_address_change(view, off, end, mtype == RTM_NEWADDR))
            elif (mtype == RTM_NEWNEIGH or mtype == RTM_DELNEIGH) and mlen >= _ATTR_OFF:
                _family, ifindex, _state, _nflags, _t = NDMSG.unpack_from(view, off + _NDMSG_OFF)
                if ifindex in entries:
                    ev = self._entry_change(off, end, mtype == RTM_DELNEIGH)
                    if ev is not None:
                        out.append(ev)
            off += (mlen + 3) & ~3

    def _entry_change(self, off: int, end: int, deleted: bool) -> FdbChange | NeighChange | None:
        """An FDB remote (AF_BRIDGE, NTF_SELF) or a neighbour (AF_INET/AF_INET6) of a watched device."""
        view = self._view
        family, ifindex, state, nflags, _t = NDMSG.unpack_from(view, off + _NDMSG_OFF)
        attrs = parse_attrs(view, off + _ATTR_OFF, end)
        dst, lladdr, port, proto = attrs.get(NDA_DST), attrs.get(NDA_LLADDR), attrs.get(NDA_PORT), attrs.get(NDA_PROTOCOL)
        ip = _ip(bytes(dst)) if dst is not None else None
        if ip is None:
            return None
        mac = bytes(lladdr).hex(":") if lladdr is not None and len(lladdr) == 6 else None
        if family == AF_BRIDGE:
            if not nflags & NTF_SELF or nflags & NTF_MASTER or mac is None:
                return None
            port_no = _BE16.unpack(port)[0] if port is not None and len(port) == 2 else 0
            return FdbChange(ifindex, mac, ip, port_no, deleted, fdb_owned(nflags, proto))
        if nflags & NTF_PROXY:
            return None
        usable = not deleted and state & _CONNECTED
        return NeighChange(ifindex, ip, mac if usable else None, deleted, neigh_owned(proto))

    # -- reading -----------------------------------------------------------------
    def poll(self) -> list[Event]:
        """Read and parse everything queued right now, without blocking."""
        out: list[Event] = []
        sock = self._sock
        buf = self._buf
        while True:
            try:
                n = sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError as exc:
                if exc.errno == _errno.ENOBUFS:
                    self.lost += 1
                    out.append(EventsLost("ENOBUFS: netlink receive buffer overflowed, re-read kernel state"))
                    continue
                raise
            self._parse(n, out)

    # Beyond this many unconsumed events the consumer is not keeping up: drop them and say
    # so, exactly as the kernel does with ENOBUFS, so memory stays bounded in a miss storm.
    MAX_QUEUED = 65536

    def _on_readable(self) -> None:
        try:
            self._queue.extend(self.poll())
        except OSError as exc:
            self._error = exc
        if len(self._queue) > self.MAX_QUEUED:
            self._queue = [EventsLost("consumer too slow: queued events dropped, re-read kernel state")]
            self.lost += 1
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_batch(self) -> list[Event]:
        """Wait until at least one event is available and return all queued ones."""
        if self.closed:
            raise KmodError("MissListener is closed")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._queue.extend(self.poll())  # anything that arrived before the first wait
            self._loop.add_reader(self._sock.fileno(), self._on_readable)
        while not self._queue:
            if self._error is not None:
                raise self._error
            if self.closed:
                raise KmodError("MissListener is closed")
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        out, self._queue = self._queue, []
        return out

    async def events(self) -> AsyncIterator[Event]:
        while not self.closed:
            try:
                batch = await self.next_batch()
            except (OSError, KmodError):
                if self.closed:
                    return
                raise
            for ev in batch:
                yield ev


def _address_change(view: memoryview, off: int, end: int, added: bool) -> AddressChange:
    """An RTM_NEWADDR/RTM_DELADDR: IFA_LOCAL is the host's own address (IFA_ADDRESS the peer's on
    a point-to-point link), IFA_ADDRESS when there is no IFA_LOCAL (IPv6)."""
    _family, _plen, _flags, _scope, ifindex = IFADDRMSG.unpack_from(view, off + NLH.size)
    found: dict[int, bytes] = {}
    a = off + NLH.size + IFADDRMSG.size
    while a + 4 <= end:
        alen, atype = NLA.unpack_from(view, a)
        if alen < 4 or a + alen > end:
            break
        if atype in (IFA_ADDRESS, IFA_LOCAL) and alen - 4 in (4, 16):
            found[atype] = bytes(view[a + 4 : a + alen])
        a += (alen + 3) & ~3
    raw = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)
    ip = None if raw is None else (IPv4Address(raw) if len(raw) == 4 else IPv6Address(raw))
    return AddressChange(ifindex, ip, added)
