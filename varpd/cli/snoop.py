"""`varpd snoop`: watch VXLAN on the underlay, one line per frame (illumos snoop, tcpdump).

Capture is varpd_kmod.capture (AF_PACKET with a kernel BPF filter for the VXLAN UDP
port, promiscuous like tcpdump, kernel drop counts); decoding is the pure
varpd.packet.vxlan_summary; files are varpd.packet.pcapfile.  This module only wires
them to the command line and the signals.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import IO, Any

from varpd.cli.arguments import VNI_HELP, vni
from varpd.cli.client import CliError
from varpd.packet.pcapfile import CaptureCutShort, CaptureFileError, CaptureReader, PcapWriter
from varpd.packet.vxlan_summary import (
    VXLAN_PORT, OuterFragments, format_summary, summarize, summary_to_dict,
)

_MAX_SNAPLEN = 262144
_DEFAULT_BUFFER_KIB = 32 * 1024


class _Printer:
    """Decodes, filters by VNI, prints (text or JSON) and optionally writes a pcap; counts frames.

    Lines are written to a buffered stdout and flushed per batch (a flush per line is a system
    call per frame, which is what made a burst outrun the capture)."""

    def __init__(self, args: argparse.Namespace, pcap_out: IO[bytes] | None) -> None:
        self.port: int = args.port
        self.vni: int | None = args.vni
        self.json: bool = args.json
        self.limit: int | None = args.count
        self.seen = 0
        self.shown = 0
        self._fragments = OuterFragments()
        self._writer = PcapWriter(pcap_out) if pcap_out is not None else None
        self._write = sys.stdout.write

    @property
    def done(self) -> bool:
        return self.limit is not None and self.shown >= self.limit

    def frame(self, data: bytes, timestamp: float, wire_len: int | None = None, number: int | None = None) -> None:
        """``number`` is the record's place in a file (tshark's frame.number), given in --json."""
        self.seen += 1
        summary = summarize(data, port=self.port, timestamp=timestamp, wire_len=wire_len,
                            fragments=self._fragments)
        if summary is None or (self.vni is not None and summary.vni != self.vni) or self.done:
            return
        self.shown += 1
        if self._writer is not None:
            self._writer.write(data, timestamp, wire_len)
        if self.json:
            obj = summary_to_dict(summary)
            if number is not None:
                obj["frame"] = number
            line = json.dumps(obj)
        else:
            line = format_summary(summary)
        self._write(line + "\n")


def _note(text: str) -> None:
    """A line on stderr, after the frames printed so far (so the two streams read in order)."""
    sys.stdout.flush()
    print(f"varpd snoop: {text}", file=sys.stderr, flush=True)


def _read(path: str, printer: _Printer) -> int:
    """Decode every record of a pcap/pcapng file; a file cut mid-record warns, and says so at the end."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise CliError(f"-r {path}: {exc.strerror or exc}") from None
    cut: str | None = None
    with f:
        try:
            reader = CaptureReader(f)
            warned = 0
            for record in reader:
                printer.frame(record.frame, record.timestamp, record.wire_len, record.number)
                while warned < len(reader.warnings):
                    _note(f"warning: -r {path}: {reader.warnings[warned]}")
                    warned += 1
                if printer.done:
                    break
        except CaptureCutShort as exc:
            cut = str(exc)
            _note(f"warning: -r {path}: {cut}")
        except CaptureFileError as exc:
            sys.stdout.flush()
            raise CliError(f"-r {path}: {exc}") from None
    sys.stdout.flush()
    if cut is not None:
        _note(f"{printer.shown} frames shown of {printer.seen} records; {path} is cut short "
              "mid-record: the rest of the file was not read")
        return 1
    if reader.skipped:
        _note(f"{printer.shown} frames shown; {reader.skipped} records of interfaces with an unsupported "
              "link type skipped")
    return 0


async def _capture(args: argparse.Namespace, printer: _Printer) -> str:
    """Capture until -c frames, SIGINT or SIGTERM; tcpdump's end-of-capture counts."""
    from varpd_kmod.capture import PacketCapture, bpf_vxlan
    from varpd_kmod.types import KmodError

    promiscuous = args.interface is not None and not args.no_promiscuous
    try:
        capture = PacketCapture(args.interface, bpf=bpf_vxlan(args.port), promiscuous=promiscuous,
                                buffer_bytes=args.buffer_size * 1024, snaplen=args.snaplen or _MAX_SNAPLEN)
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
            for packet in await capture.recv_batch():
                printer.frame(packet.data, packet.timestamp, packet.wire_len)
            sys.stdout.flush()

    where = args.interface or "all interfaces"
    mode = ", promiscuous" if promiscuous else ""
    vni = "" if args.vni is None else f", vni {args.vni}"
    print(f"varpd snoop: listening on {where} (udp port {args.port}{vni}{mode})", file=sys.stderr, flush=True)
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
        capture.close()
    stats = capture.stats()
    return (f"{printer.shown} frames shown; {printer.seen} packets captured, {stats.received} received by "
            f"filter, {stats.dropped} dropped by kernel")


def run(args: argparse.Namespace) -> int:
    if args.read and args.interface:
        raise CliError("give -r FILE or -i IFACE, not both")
    pcap_out: IO[bytes] | None = None
    if args.write:
        try:
            pcap_out = open(args.write, "wb")
        except OSError as exc:
            raise CliError(f"-w {args.write}: {exc.strerror or exc}") from None
    rc = 0
    try:
        printer = _Printer(args, pcap_out)
        if args.read:
            rc = _read(args.read, printer)
        else:
            counts = asyncio.run(_capture(args, printer))
            sys.stdout.flush()
            print(f"varpd snoop: {counts}", file=sys.stderr)
    except BrokenPipeError:  # `varpd snoop | head`: the reader is gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if pcap_out is not None:
            pcap_out.close()
    return rc


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
                    "MACs, VLAN tags, and an ARP, IPv4/IPv6 (extension headers named), ICMP/ICMPv6 (echo, "
                    "neighbor solicitation and advertisement), TCP/UDP or DHCP summary. Outer and inner IP "
                    "fragments and frames cut by a snap length are decoded as far as their bytes go and marked "
                    "truncated; frames that do not decode are shown as `malformed: <why>`. A named interface is "
                    "captured in promiscuous mode (-p not). SIGINT or SIGTERM ends the capture, which reports "
                    "tcpdump's counts: packets captured, received by filter and dropped by kernel. -r reads "
                    "pcap or pcapng (Ethernet, Linux cooked v1 and v2, raw IP; several interfaces); a file cut "
                    "mid-record is warned about and exits 1. Does not need the daemon.")
    p.add_argument("-i", "--interface", metavar="IFACE",
                   help="underlay interface to capture on, in promiscuous mode (default: every interface, "
                        "not promiscuous)")
    p.add_argument("-p", "--no-promiscuous-mode", dest="no_promiscuous", action="store_true",
                   help="do not put the interface into promiscuous mode (a bridge then shows only the frames "
                        "to and from the host itself, not those it forwards between its ports)")
    p.add_argument("-B", "--buffer-size", type=_ranged(64, 2**21), default=_DEFAULT_BUFFER_KIB, metavar="KIB",
                   help=f"socket receive buffer in KiB, for bursts (default {_DEFAULT_BUFFER_KIB})")
    p.add_argument("-s", "--snapshot-length", dest="snaplen", type=_ranged(0, _MAX_SNAPLEN), default=0,
                   metavar="SNAPLEN", help="keep at most SNAPLEN bytes of each frame (default 0: all of it)")
    p.add_argument("--vni", type=vni, metavar="N",
                   help=f"show only frames of this VNI ({VNI_HELP})")
    p.add_argument("--port", type=_ranged(1, 65535), default=VXLAN_PORT, metavar="PORT",
                   help=f"VXLAN UDP port (default {VXLAN_PORT})")
    p.add_argument("-c", "--count", type=_ranged(1, 2**31 - 1), metavar="COUNT",
                   help="stop after COUNT matching frames")
    p.add_argument("--json", action="store_true", help="print one JSON object per frame")
    p.add_argument("-r", "--read", metavar="FILE", help="read frames from a pcap or pcapng file instead (tcpdump, dumpcap)")
    p.add_argument("-w", "--write", metavar="FILE", help="also write the matching frames to a pcap file")
    p.set_defaults(func=run)
