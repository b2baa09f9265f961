"""`varpd snoop`: watch VXLAN on the underlay, one line per frame (illumos snoop, tcpdump).

Capture is an AF_PACKET socket with a kernel BPF filter for the VXLAN UDP port
(varpd_kmod.frames); decoding is the pure varpd.packet.vxlan_summary; this module
only wires them to the command line, a pcap reader/writer and the signals.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import dpkt

from varpd.cli.client import CliError
from varpd.packet.vxlan_summary import MAX_VNI, VXLAN_PORT, format_summary, summarize, summary_to_dict

_SLL_HEADER_LEN = 16  # Linux cooked capture (tcpdump -i any), DLT_LINUX_SLL


class _Printer:
    """Decodes, filters by VNI, prints (text or JSON) and optionally writes a pcap; counts shown frames."""

    def __init__(self, args: argparse.Namespace, pcap_out: IO[bytes] | None) -> None:
        self.port: int = args.port
        self.vni: int | None = args.vni
        self.json: bool = args.json
        self.limit: int | None = args.count
        self.shown = 0
        self._writer = dpkt.pcap.Writer(pcap_out, snaplen=65535) if pcap_out is not None else None
        self._pcap_out = pcap_out

    @property
    def done(self) -> bool:
        return self.limit is not None and self.shown >= self.limit

    def frame(self, data: bytes, timestamp: float) -> None:
        summary = summarize(data, port=self.port, timestamp=timestamp)
        if summary is None or (self.vni is not None and summary.vni != self.vni):
            return
        self.shown += 1
        if self._writer is not None:
            self._writer.writepkt(data, ts=timestamp)
            self._pcap_out.flush()  # type: ignore[union-attr]  # usable while still capturing
        line = json.dumps(summary_to_dict(summary)) if self.json else format_summary(summary)
        print(line, flush=True)


def _pcap_frames(path: str) -> Iterator[tuple[float, bytes]]:
    """(timestamp, Ethernet frame) of a pcap or pcapng file; cooked captures get a fake Ethernet header."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise CliError(f"-r {path}: {exc.strerror or exc}") from None
    with f:
        try:
            reader = dpkt.pcap.UniversalReader(f)
        except (ValueError, dpkt.Error) as exc:
            raise CliError(f"-r {path}: not a pcap or pcapng file ({exc})") from None
        link = reader.datalink()
        if link not in (dpkt.pcap.DLT_EN10MB, dpkt.pcap.DLT_LINUX_SLL):
            raise CliError(f"-r {path}: link type {link} is not Ethernet (1) or Linux cooked (113)")
        try:
            for ts, buf in reader:
                if link == dpkt.pcap.DLT_LINUX_SLL:
                    if len(buf) < _SLL_HEADER_LEN:
                        continue
                    buf = bytes(12) + buf[14:16] + buf[_SLL_HEADER_LEN:]
                yield float(ts), bytes(buf)
        except (ValueError, dpkt.Error) as exc:  # a file cut short mid-record
            raise CliError(f"-r {path}: {exc}") from None


async def _capture(args: argparse.Namespace, printer: _Printer) -> None:
    from varpd_kmod.frames import FrameTap, bpf_udp_port
    from varpd_kmod.types import KmodError

    try:
        tap = FrameTap(args.interface, bpf=bpf_udp_port(args.port))
    except KmodError as exc:
        raise CliError(f"-i: {exc}") from None
    except PermissionError:
        raise CliError("capturing needs root (CAP_NET_RAW)") from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def receive() -> None:
        while not printer.done:
            frame = await tap.recv()
            printer.frame(frame.data, time.time())

    where = args.interface or "all interfaces"
    vni = "" if args.vni is None else f", vni {args.vni}"
    print(f"varpd snoop: listening on {where} (udp port {args.port}{vni})", file=sys.stderr, flush=True)
    tasks = {asyncio.create_task(receive()), asyncio.create_task(stop.wait())}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a capture error propagates
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        tap.close()


def run(args: argparse.Namespace) -> int:
    if args.read and args.interface:
        raise CliError("give -r FILE or -i IFACE, not both")
    pcap_out: IO[bytes] | None = None
    if args.write:
        try:
            pcap_out = open(args.write, "wb")
        except OSError as exc:
            raise CliError(f"-w {args.write}: {exc.strerror or exc}") from None
    printer = _Printer(args, pcap_out)
    try:
        if args.read:
            for ts, frame in _pcap_frames(args.read):
                printer.frame(frame, ts)
                if printer.done:
                    break
        else:
            asyncio.run(_capture(args, printer))
    except BrokenPipeError:  # `varpd snoop | head`: the reader is gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if pcap_out is not None:
            pcap_out.close()
    if not args.read:
        print(f"varpd snoop: {printer.shown} frames", file=sys.stderr)
    return 0


def _ranged(low: int, high: int):
    """An argparse type for an integer in low..high (argparse names the option in its error)."""
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value
    return parse


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "snoop", help="capture VXLAN on the underlay and decode it, one line per frame",
        description="Capture VXLAN frames on the underlay (AF_PACKET with a kernel BPF filter for the UDP port; "
                    "needs root) and print one line per frame: time, outer source and destination, VNI, inner "
                    "MACs, VLAN tag, and an ARP, IPv4/IPv6, ICMP/ICMPv6 (echo, neighbor solicitation and "
                    "advertisement), TCP/UDP or DHCP summary. Frames that do not decode are shown as "
                    "`malformed: <why>`. SIGINT or SIGTERM ends the capture. Does not need the daemon.")
    p.add_argument("-i", "--interface", metavar="IFACE",
                   help="underlay interface to capture on (default: every interface)")
    p.add_argument("--vni", type=_ranged(0, MAX_VNI), metavar="N",
                   help="show only frames of this VNI")
    p.add_argument("--port", type=_ranged(1, 65535), default=VXLAN_PORT, metavar="PORT",
                   help=f"VXLAN UDP port (default {VXLAN_PORT})")
    p.add_argument("-c", "--count", type=_ranged(1, 2**31 - 1), metavar="COUNT",
                   help="stop after COUNT matching frames")
    p.add_argument("--json", action="store_true", help="print one JSON object per frame")
    p.add_argument("-r", "--read", metavar="FILE", help="read frames from a pcap or pcapng file instead")
    p.add_argument("-w", "--write", metavar="FILE", help="also write the matching frames to a pcap file")
    p.set_defaults(func=run)
