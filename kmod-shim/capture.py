"""A packet capture for `varpd snoop`, tcpdump-like: promiscuous, a big buffer, kernel drop counts.

Built on :class:`FrameTap` (which opens the AF_PACKET socket with the BPF filter in place
before any frame is queued, and asks for timestamps and PACKET_AUXDATA) and taking its
socket over, so capture keeps one way of opening sockets and of reading a frame's
metadata.  What it adds is what a watcher of a busy underlay needs and the daemon's taps
do not: PACKET_MR_PROMISC (a bridge passes frames it forwards between its ports up to its
own device only when promiscuous), a receive buffer that can absorb a burst
(SO_RCVBUFFORCE), wire lengths (MSG_TRUNC) for a snap length, draining many frames per
wakeup, and PACKET_STATISTICS so that frames the kernel dropped are counted and reported
instead of vanishing.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass

from .frames import (
    _CMSG_SPACE, BPF_JEQ_K, BPF_JSET_K, BPF_LD_B_ABS, BPF_LD_H_ABS, BPF_RET_K,
    ETH_P_IP, ETH_P_IPV6, SNAPLEN, BpfInsn, FrameTap, _frame_from, _ipv4_udp_ports, bpf_assemble,
)
from .readable import ReadWaiter
from .types import KmodError

__all__ = ["CaptureStats", "CapturedPacket", "PacketCapture", "bpf_vxlan"]

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33
MAX_SNAPLEN = 262144
DEFAULT_BUFFER = 32 * 1024 * 1024


_IPV6_EXTENSIONS = (0, 43, 44, 51, 60)  # hop-by-hop, routing, fragment, AH, destination options


def bpf_vxlan(port: int) -> list[BpfInsn]:
    """What snoop can decode of UDP ``port``: IPv4 and IPv6 UDP from or to it, and also what a
    classic BPF cannot tell apart cheaply - IPv4 later fragments of UDP (no UDP header: the
    decoder keeps those whose first fragment was VXLAN) and IPv6 behind extension headers."""
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"UDP port must be 1..65535, not {port!r}")
    return bpf_assemble([
        (BPF_LD_H_ABS, 0, 0, 12),
        (BPF_JEQ_K, "ip4-fragments", 0, ETH_P_IP),
        (BPF_JEQ_K, "ip6", "drop", ETH_P_IPV6),
        ("label", "ip4-fragments"),
        (BPF_LD_B_ABS, 0, 0, 14 + 9),  # protocol
        (BPF_JEQ_K, 0, "drop", 17),
        (BPF_LD_H_ABS, 0, 0, 14 + 6),  # flags + fragment offset
        (BPF_JSET_K, "accept", "ip4", 0x1FFF),
        *_ipv4_udp_ports((port,)),  # label "ip4": a first fragment or whole datagram from or to port
        ("label", "ip6"),
        (BPF_LD_B_ABS, 0, 0, 14 + 6),  # next header
        (BPF_JEQ_K, "udp6", 0, 17),
        *[(BPF_JEQ_K, "accept", 0, nxt) for nxt in _IPV6_EXTENSIONS],
        (BPF_RET_K, 0, 0, 0),
        ("label", "udp6"),
        (BPF_LD_H_ABS, 0, 0, 14 + 40),
        (BPF_JEQ_K, "accept", 0, port),
        (BPF_LD_H_ABS, 0, 0, 14 + 42),
        (BPF_JEQ_K, "accept", "drop", port),
        ("label", "accept"),
        (BPF_RET_K, 0, 0, SNAPLEN),
        ("label", "drop"),
        (BPF_RET_K, 0, 0, 0),
    ])


@dataclass(frozen=True, slots=True)
class CapturedPacket:
    """One frame: the captured bytes (at most the snap length), its wire length and kernel receive time."""

    data: bytes
    wire_len: int
    timestamp: float
    outgoing: bool


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """tcpdump's end-of-capture counts: frames the filter accepted, and of those the kernel dropped
    (the socket buffer was full)."""

    received: int
    dropped: int


class PacketCapture:
    """Captures frames accepted by ``bpf`` on ``ifname`` (every interface when None) of ``netns``.

    ``promiscuous`` puts a named interface into promiscuous mode for the life of the socket (the
    kernel undoes it when the socket closes, however the process ends); ``buffer_bytes`` is the
    socket receive buffer; ``snaplen`` caps the bytes kept of each frame."""

    def __init__(self, ifname: str | None, netns: str | None = None, *, bpf: list[BpfInsn] | None = None,
                 promiscuous: bool = False, buffer_bytes: int = DEFAULT_BUFFER,
                 snaplen: int = MAX_SNAPLEN) -> None:
        if not 0 < snaplen <= MAX_SNAPLEN:
            raise ValueError(f"snap length must be 1..{MAX_SNAPLEN}, not {snaplen}")
        tap = FrameTap(ifname, netns, bpf=bpf)
        try:
            self._sock = socket.socket(fileno=os.dup(tap.fileno()))
        finally:
            tap.close()
        try:
            self._sock.setblocking(False)
            if promiscuous:
                if ifname is None:
                    raise KmodError("promiscuous mode needs an interface")
                mreq = struct.pack("iHH8s", tap.ifindex, PACKET_MR_PROMISC, 0, b"")
                self._sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            self.buffer_bytes = self._set_buffer(buffer_bytes)
        except BaseException:
            self._sock.close()
            raise
        self.ifname = ifname
        self.ifindex = tap.ifindex
        self.promiscuous = promiscuous
        self._buf = bytearray(snaplen)
        self._view = memoryview(self._buf)
        self._ancillary = _CMSG_SPACE  # FrameTap asked for PACKET_AUXDATA and SO_TIMESTAMPNS
        self._received = self._dropped = 0
        self._reader = ReadWaiter()
        self.closed = False

    def _set_buffer(self, size: int) -> int:
        """SO_RCVBUFFORCE (root may exceed net.core.rmem_max), else SO_RCVBUF; the size the kernel kept."""
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except PermissionError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self, limit: int = 512) -> list[CapturedPacket]:
        """Up to ``limit`` queued frames, without waiting (an empty list when none is queued)."""
        if self.closed:
            raise KmodError("the capture is closed")
        out: list[CapturedPacket] = []
        recv, view, anc = self._sock.recvmsg_into, self._view, self._ancillary
        for _ in range(limit):
            try:
                wire_len, ancdata, _, addr = recv([view], anc, socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                break
            kept = bytes(view[:min(wire_len, len(view))])
            frame = _frame_from(kept, ancdata, addr[2], self.ifindex)  # the stripped VLAN tag back in
            stamp = round(frame.timestamp * 1e6) / 1e6 if frame.timestamp else time.time()  # pcap keeps µs
            out.append(CapturedPacket(frame.data, wire_len + len(frame.data) - len(kept), stamp, frame.outgoing))
        return out

    async def recv_batch(self, limit: int = 512) -> list[CapturedPacket]:
        """At least one frame (waiting for it), at most ``limit``: one wakeup serves a burst."""
        batch = self.drain(limit)
        if batch:
            return batch
        while not batch:
            await self._reader.wait(self._sock.fileno())
            batch = self.drain(limit)
        return batch

    def stats(self) -> CaptureStats:
        """Frames accepted by the filter and frames dropped for lack of buffer, since the capture opened
        (PACKET_STATISTICS resets on every read, so the totals are kept here)."""
        if not self.closed:
            packets, drops = struct.unpack("II", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            self._received += packets  # the kernel's count includes the drops
            self._dropped += drops
        return CaptureStats(self._received, self._dropped)

    def close(self) -> None:
        if not self.closed:
            self.stats()
            self.closed = True
            self._reader.end(KmodError("the capture is closed"))
            self._sock.close()

    def __enter__(self) -> "PacketCapture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

