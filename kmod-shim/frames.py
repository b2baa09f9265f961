"""AF_PACKET frame capture / injection for what the kernel cannot answer itself.

* On a bridge, broadcast frames from bridge ports are passed up to the bridge
  device and are seen as incoming there.
* Frames transmitted through the VXLAN device are seen as outgoing on it.
* Writing a frame to the VXLAN device's packet socket sends it through
  ``vxlan_xmit`` (FDB lookup -> encapsulated to the remote); writing to the
  bridge device sends it through the bridge (to the port that learned the
  destination MAC, e.g. a local guest).
"""
from __future__ import annotations

import asyncio
import ctypes
import errno as _errno
import socket
import struct
from typing import Literal, Sequence

from ._netns import run_in_netns
from .readable import ReadWaiter
from .types import CapturedFrame, KmodError

__all__ = [
    "FrameTap",
    "BpfInsn",
    "bpf_assemble",
    "bpf_arp_ndp_dhcp",
    "bpf_udp_port",
    "BPF_ARP_NDP_DHCP",
    "BPF_ARP",
    "BPF_DHCP4",
    "BPF_ICMPV6",
    "BPF_ACCEPT_ALL",
    "MAX_FRAME",
    "PACKET_OUTGOING",
    "PACKET_OTHERHOST",
]

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_OTHERHOST = 3
PACKET_OUTGOING = 4
PACKET_AUXDATA = 8
SO_TIMESTAMPNS = 35  # also the cmsg type (SCM_TIMESTAMPNS)
# struct tpacket_auxdata: tp_status, tp_len, tp_snaplen, tp_mac, tp_net, tp_vlan_tci, tp_vlan_tpid
_AUXDATA = struct.Struct("=IIIHHHH")
_TIMESPEC = struct.Struct("=qq")
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
ETH_P_8021Q = 0x8100
_CMSG_SPACE = socket.CMSG_SPACE(_AUXDATA.size) + socket.CMSG_SPACE(_TIMESPEC.size)
SO_ATTACH_FILTER = 26
MAX_FRAME = 1518
MIN_FRAME = 14

BpfInsn = tuple[int, int, int, int]  # (code, jt, jf, k)

# classic BPF opcodes
BPF_LD_H_ABS = 0x28
BPF_LD_B_ABS = 0x30
BPF_LD_H_IND = 0x48
BPF_LDX_B_MSH = 0xB1
BPF_JEQ_K = 0x15
BPF_JSET_K = 0x45
BPF_RET_K = 0x06

SNAPLEN = 0x40000


def bpf_assemble(prog: Sequence[tuple]) -> list[BpfInsn]:
    """Tiny assembler: items are ``(code, jt, jf, k)`` where jt/jf may be label
    strings, or ``("label", name)`` markers."""
    labels: dict[str, int] = {}
    insns: list[tuple] = []
    for item in prog:
        if item[0] == "label":
            labels[item[1]] = len(insns)
        else:
            insns.append(item)
    out: list[BpfInsn] = []
    for pc, (code, jt, jf, k) in enumerate(insns):
        def rel(target) -> int:
            if isinstance(target, int):
                return target
            off = labels[target] - pc - 1
            if not 0 <= off <= 255:
                raise ValueError(f"bpf jump to {target} out of range")
            return off
        out.append((code, rel(jt), rel(jf), k))
    return out


def _ipv4_udp_ports(ports: Sequence[int]) -> list[tuple]:
    """The block at label "ip4": an IPv4 UDP first fragment whose source or destination port is one
    of `ports` jumps to "accept", anything else to "drop"."""
    *others, last = ports
    return [
        ("label", "ip4"),
        (BPF_LD_B_ABS, 0, 0, 14 + 9),  # protocol
        (BPF_JEQ_K, 0, "drop", 17),
        (BPF_LD_H_ABS, 0, 0, 14 + 6),  # flags + fragment offset
        (BPF_JSET_K, "drop", 0, 0x1FFF),
        (BPF_LDX_B_MSH, 0, 0, 14),  # X = IHL * 4
        (BPF_LD_H_IND, 0, 0, 14),  # UDP source port
        *[(BPF_JEQ_K, "accept", 0, port) for port in ports],
        (BPF_LD_H_IND, 0, 0, 16),  # UDP destination port
        *[(BPF_JEQ_K, "accept", 0, port) for port in others],
        (BPF_JEQ_K, "accept", "drop", last),
    ]


def bpf_arp_ndp_dhcp(*, arp: bool = True, icmpv6: bool = True, dhcp4: bool = True) -> list[BpfInsn]:
    """Accept ARP, IPv6 with next header ICMPv6 (NDP) and/or IPv4 UDP with
    source or destination port 67/68 (non-fragmented); drop everything else."""
    p: list[tuple] = [(BPF_LD_H_ABS, 0, 0, 12)]
    if arp:
        p.append((BPF_JEQ_K, "accept", 0, ETH_P_ARP))
    if icmpv6:
        p.append((BPF_JEQ_K, "ip6", 0, ETH_P_IPV6))
    if dhcp4:
        p.append((BPF_JEQ_K, "ip4", "drop", ETH_P_IP))
    else:
        p.append((BPF_RET_K, 0, 0, 0))
    if icmpv6:
        p += [
            ("label", "ip6"),
            (BPF_LD_B_ABS, 0, 0, 14 + 6),  # IPv6 next header
            (BPF_JEQ_K, "accept", "drop", 58),
        ]
    if dhcp4:
        p += _ipv4_udp_ports((67, 68))
    p += [
        ("label", "accept"),
        (BPF_RET_K, 0, 0, SNAPLEN),
        ("label", "drop"),
        (BPF_RET_K, 0, 0, 0),
    ]
    return bpf_assemble(p)


def bpf_udp_port(port: int) -> list[BpfInsn]:
    """Accept IPv4 (first fragments only) and IPv6 (no extension headers) UDP with
    source or destination ``port``, e.g. VXLAN on the underlay; drop everything else."""
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"UDP port must be 1..65535, not {port!r}")
    return bpf_assemble([
        (BPF_LD_H_ABS, 0, 0, 12),
        (BPF_JEQ_K, "ip4", 0, ETH_P_IP),
        (BPF_JEQ_K, "ip6", "drop", ETH_P_IPV6),
        *_ipv4_udp_ports((port,)),
        ("label", "ip6"),
        (BPF_LD_B_ABS, 0, 0, 14 + 6),  # next header
        (BPF_JEQ_K, 0, "drop", 17),
        (BPF_LD_H_ABS, 0, 0, 14 + 40),  # UDP source port
        (BPF_JEQ_K, "accept", 0, port),
        (BPF_LD_H_ABS, 0, 0, 14 + 42),  # UDP destination port
        (BPF_JEQ_K, "accept", "drop", port),
        ("label", "accept"),
        (BPF_RET_K, 0, 0, SNAPLEN),
        ("label", "drop"),
        (BPF_RET_K, 0, 0, 0),
    ])


BPF_ARP_NDP_DHCP: list[BpfInsn] = bpf_arp_ndp_dhcp()
BPF_ARP: list[BpfInsn] = bpf_arp_ndp_dhcp(icmpv6=False, dhcp4=False)
BPF_ICMPV6: list[BpfInsn] = bpf_arp_ndp_dhcp(arp=False, dhcp4=False)
BPF_DHCP4: list[BpfInsn] = bpf_arp_ndp_dhcp(arp=False, icmpv6=False)
BPF_ACCEPT_ALL: list[BpfInsn] = [(BPF_RET_K, 0, 0, SNAPLEN)]
BPF_DROP_ALL: list[BpfInsn] = [(BPF_RET_K, 0, 0, 0)]


def _want_metadata(sock: socket.socket) -> None:
    """Ask for PACKET_AUXDATA (partial checksum, stripped VLAN tag) and the receive timestamp."""
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def _frame_from(data: bytes, ancdata, pkttype: int, ifindex: int) -> CapturedFrame:
    """The frame as it was on the wire: the VLAN tag the kernel stripped goes back in (as libpcap does)."""
    vlan, partial, stamp = None, False, 0.0
    for level, kind, value in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(value) >= _AUXDATA.size:
            status, _, _, _, _, tci, tpid = _AUXDATA.unpack_from(value)
            partial = bool(status & TP_STATUS_CSUMNOTREADY)
            if status & TP_STATUS_VLAN_VALID or tci:
                tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID and tpid else ETH_P_8021Q
                data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
                vlan = tci & 0x0FFF
        elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(value)
            stamp = sec + nsec / 1e9
    return CapturedFrame(data=data, outgoing=pkttype == PACKET_OUTGOING, ifindex=ifindex,
                         pkttype=pkttype, vlan=vlan, csum_partial=partial, timestamp=stamp)


def _attach_filter(sock: socket.socket, prog: Sequence[BpfInsn]) -> None:
    if not prog or len(prog) > 4096:
        raise KmodError("BPF program must have 1..4096 instructions")
    raw = b"".join(struct.pack("=HBBI", c, jt, jf, k) for c, jt, jf, k in prog)
    cbuf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("@HP", len(prog), ctypes.addressof(cbuf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    del cbuf


class FrameTap:
    """Raw Ethernet capture/injection on one interface (optionally in a netns).

    ``ifname=None`` captures on every interface of the namespace (capture only:
    such a tap has no interface to send on, and its ``ifindex`` is 0).
    ``capture=False`` makes a send-only tap: bound with protocol 0, it is not one of
    the device's packet taps, so the frames crossing the device are not cloned and
    filtered for it (a capturing tap on a VXLAN port costs every bridged frame that)."""

    def __init__(
        self,
        ifname: str | None,
        netns: str | None = None,
        *,
        bpf: list[BpfInsn] | None = None,
        direction: Literal["in", "out", "both"] = "both",
        capture: bool = True,
    ) -> None:
        if direction not in ("in", "out", "both"):
            raise ValueError(f"direction must be 'in', 'out' or 'both', not {direction!r}")
        if not capture and (ifname is None or bpf is not None):
            raise ValueError("a send-only tap needs an interface and takes no filter")
        self.ifname = ifname
        self.capture = capture
        self.netns = netns
        self.direction = direction

        def make_any() -> tuple[socket.socket, int]:
            # An unbound socket must name its protocol at creation (bind needs an
            # interface), so it receives before any filter is attached: drop all,
            # drain what was queued meanwhile (bounded), then attach the real filter.
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                              socket.htons(ETH_P_ALL))
            try:
                if bpf is not None:
                    _attach_filter(s, BPF_DROP_ALL)
                    while True:
                        try:
                            s.recv(1)
                        except BlockingIOError:
                            break
                    _attach_filter(s, bpf)
                _want_metadata(s)
                if direction == "in":
                    try:
                        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                    except OSError:
                        pass
            except BaseException:
                s.close()
                raise
            return s, 0

        def make() -> tuple[socket.socket, int]:
            if ifname is None:
                return make_any()
            try:
                ifindex = socket.if_nametoindex(ifname)
            except OSError:
                raise KmodError(f"interface {ifname!r} not found") from None
            # protocol 0: receives nothing until bind(), so the filter is in place first
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, 0)
            try:
                if not capture:
                    s.bind((ifname, 0))  # protocol 0: never registered as a tap, receives nothing
                    return s, ifindex
                if bpf is not None:
                    _attach_filter(s, bpf)
                _want_metadata(s)
                if direction == "in":
                    try:
                        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                    except OSError:
                        pass  # old kernel: filtered in recv()
                s.bind((ifname, ETH_P_ALL))
            except BaseException:
                s.close()
                raise
            return s, ifindex

        self._sock, self.ifindex = run_in_netns(netns, make)
        self._buf = bytearray(65536)
        self.closed = False
        self._reader = ReadWaiter()  # a recv() waiting on the loop, which close() ends


    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        """Ends a waiting recv() before the socket goes (varpd_kmod.readable says why)."""
        if not self.closed:
            self.closed = True
            self._reader.end(KmodError("FrameTap is closed"))
            self._sock.close()

    def __enter__(self) -> "FrameTap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> "FrameTap":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    async def recv(self) -> CapturedFrame:
        """The next frame; returns at once while frames are queued (the caller decides when to yield)."""
        if self.closed:
            raise KmodError("FrameTap is closed")
        if not self.capture:
            raise KmodError(f"the tap on {self.ifname!r} is send-only")
        want_out = self.direction != "in"
        want_in = self.direction != "out"
        while True:
            try:
                data, ancdata, _, addr = self._sock.recvmsg(65536, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                await self._reader.wait(self._sock.fileno())
                continue
            # addr = (ifname, proto, pkttype, hatype, hwaddr)
            outgoing = addr[2] == PACKET_OUTGOING
            if (outgoing and want_out) or (not outgoing and want_in):
                return _frame_from(data, ancdata, addr[2], self.ifindex)

    async def send(self, frame: bytes) -> None:
        if self.closed:
            raise KmodError("FrameTap is closed")
        if self.ifname is None:
            raise KmodError("cannot send on a tap of all interfaces")
        n = len(frame)
        if n > MAX_FRAME:
            raise KmodError(f"frame of {n} bytes exceeds {MAX_FRAME}")
        if n < MIN_FRAME:
            raise KmodError(f"frame of {n} bytes is shorter than an Ethernet header")
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(self._sock, frame)
        except OSError as exc:
            if exc.errno in (_errno.ENXIO, _errno.ENETDOWN):
                raise KmodError(f"cannot send on {self.ifname!r}: {exc}") from exc
            raise
