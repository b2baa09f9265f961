"""pcap and pcapng files for `varpd snoop -r/-w`: records in, Ethernet frames out, and a pcap writer.

Written here rather than with dpkt's readers because snoop must decode what tshark
decodes: dpkt gives neither the original (wire) length of a record cut by a snap
length, nor a second pcapng interface of another link type, nor Simple Packet
Blocks, and on a damaged file it raises its own internals.  Every problem with a
file is a :class:`CaptureFileError` naming the record or block and byte offset; a
file that simply ends inside a record is a :class:`CaptureCutShort` raised after
every complete record was yielded.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113  # tcpdump -i any (libpcap < 1.10)
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276  # tcpdump -i any (libpcap >= 1.10, tcpdump 4.99)
LINK_TYPES = {LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IP", LINKTYPE_LINUX_SLL: "Linux cooked",
              LINKTYPE_IPV4: "raw IPv4", LINKTYPE_IPV6: "raw IPv6", LINKTYPE_LINUX_SLL2: "Linux cooked v2"}

_ETHERTYPE_IPV4, _ETHERTYPE_IPV6 = 0x0800, 0x86DD
_SLL_LEN, _SLL2_LEN = 16, 20
_FAKE_MACS = bytes(12)
# libpcap's largest snap length; a record claiming more is damage, not data (and must not be allocated)
MAX_RECORD = 262144
MAX_BLOCK = 16 * 1024 * 1024  # Wireshark's limit for one pcapng block

_PCAP_MAGICS = {0xA1B2C3D4: 1_000_000, 0xA1B23C4D: 1_000_000_000}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BOM = 0x1A2B3C4D
_IDB, _OPB, _SPB, _EPB = 1, 2, 3, 6
_OPT_END, _IF_TSRESOL, _IF_TSOFFSET = 0, 9, 14


class CaptureFileError(Exception):
    """The file is not a capture we can read, or is damaged; the message names where."""


class CaptureCutShort(CaptureFileError):
    """The file ends inside a record or block: everything before it was read."""


@dataclass(frozen=True, slots=True)
class CaptureRecord:
    """One captured packet as an Ethernet frame (cooked and raw-IP captures get a fake header).

    ``wire_len`` is the length the frame had on the wire; it exceeds ``len(frame)`` when
    the capture used a snap length. ``interface`` is the pcapng interface (0 for pcap)."""

    timestamp: float
    frame: bytes
    wire_len: int
    number: int
    interface: int = 0


def to_ethernet(linktype: int, data: bytes, wire_len: int) -> tuple[bytes, int] | None:
    """(Ethernet frame, its wire length) for a record of ``linktype``; None for a record too short
    to carry its link header (a cooked header cut by a tiny snap length)."""
    if linktype == LINKTYPE_ETHERNET:
        return data, wire_len
    if linktype == LINKTYPE_LINUX_SLL:
        if len(data) < _SLL_LEN:
            return None
        return _FAKE_MACS + data[14:16] + data[_SLL_LEN:], wire_len - _SLL_LEN + 14
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < _SLL2_LEN:
            return None
        return _FAKE_MACS + data[0:2] + data[_SLL2_LEN:], wire_len - _SLL2_LEN + 14
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if not data:
            return None
        ethertype = _ETHERTYPE_IPV6 if data[0] >> 4 == 6 else _ETHERTYPE_IPV4
        return _FAKE_MACS + struct.pack("!H", ethertype) + data, wire_len + 14
    raise ValueError(f"link type {linktype} is not supported")


def _link_name(linktype: int) -> str:
    return f"link type {linktype}" + (f" ({LINK_TYPES[linktype]})" if linktype in LINK_TYPES else "")


def supported(linktype: int) -> bool:
    return linktype in LINK_TYPES


class CaptureReader:
    """Iterates the records of a pcap or pcapng file as :class:`CaptureRecord`.

    ``skipped`` counts records of interfaces whose link type is not supported (pcapng only: a
    pcap of such a link type is refused when opened); ``warnings`` collects one line per such
    interface, for the caller to print."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._offset = 0
        self.skipped = 0
        self.warnings: list[str] = []
        head = self._read(4, "file header", cut_ok=True)
        if len(head) < 4:
            raise CaptureFileError(f"not a pcap or pcapng file ({len(head)} bytes)")
        self._head = head
        (le,) = struct.unpack("<I", head)
        (be,) = struct.unpack(">I", head)
        if le == _PCAPNG_SHB:
            self.format = "pcapng"
        elif le in _PCAP_MAGICS or be in _PCAP_MAGICS:
            self.format = "pcap"
            self._open_pcap(le, be)
        else:
            raise CaptureFileError(f"not a pcap or pcapng file (magic {head.hex()})")

    # -- reading helpers --------------------------------------------------------------------------

    def _read(self, size: int, what: str, *, cut_ok: bool = False) -> bytes:
        data = self._f.read(size)
        if len(data) < size and not cut_ok:
            raise CaptureCutShort(f"the file ends inside the {what} at byte {self._offset}: "
                                  f"{len(data)} of {size} bytes")
        self._offset += len(data)
        return data

    # -- pcap -------------------------------------------------------------------------------------

    def _open_pcap(self, le: int, be: int) -> None:
        self._order = "<" if le in _PCAP_MAGICS else ">"
        self._ticks = _PCAP_MAGICS[le if le in _PCAP_MAGICS else be]
        rest = self._read(20, "pcap file header")
        major, minor, _, _, snaplen, linktype = struct.unpack(self._order + "HHiIII", rest)
        self.linktype = linktype & 0x0FFFFFFF  # the top bits carry the FCS length
        if major != 2:
            raise CaptureFileError(f"pcap version {major}.{minor} is not 2.x")
        if not supported(self.linktype):
            raise CaptureFileError(f"{_link_name(self.linktype)} is not Ethernet (1), Linux cooked (113), "
                                   "Linux cooked v2 (276) or raw IP (101, 228, 229)")
        self._snaplen = snaplen

    def _pcap_records(self) -> Iterator[CaptureRecord]:
        number = 0
        limit = max(self._snaplen, MAX_RECORD)
        while True:
            at = self._offset
            head = self._read(16, "record header", cut_ok=True)
            if not head:
                return
            number += 1
            if len(head) < 16:
                raise CaptureCutShort(f"the file ends inside the header of record {number} at byte {at}: "
                                      f"{len(head)} of 16 bytes")
            sec, frac, caplen, wire_len = struct.unpack(self._order + "IIII", head)
            if caplen > limit:
                raise CaptureFileError(f"record {number} at byte {at}: captured length {caplen} exceeds "
                                       f"{limit} (damaged file?)")
            data = self._f.read(caplen)
            self._offset += len(data)
            if len(data) < caplen:
                raise CaptureCutShort(f"the file ends inside record {number} at byte {at}: "
                                      f"{len(data)} of {caplen} captured bytes")
            yield from self._record(self.linktype, data, max(wire_len, caplen), sec + frac / self._ticks,
                                    number, 0)

    def _record(self, linktype: int, data: bytes, wire_len: int, timestamp: float, number: int,
                interface: int) -> Iterator[CaptureRecord]:
        converted = to_ethernet(linktype, data, wire_len)
        if converted is None:
            converted = (b"", max(wire_len, 1))  # a header cut by the snap length: shown as truncated
        frame, frame_wire_len = converted
        yield CaptureRecord(timestamp, frame, frame_wire_len, number, interface)

    # -- pcapng -----------------------------------------------------------------------------------

    def _pcapng_records(self) -> Iterator[CaptureRecord]:
        order = "<"
        interfaces: list[tuple[int, int, float, float]] = []  # (linktype, snaplen, ticks/s, offset)
        warned: set[int] = set()
        number = 0
        first = True
        while True:
            at = self._offset
            if first:
                raw_type, first = self._head, False
            else:
                raw_type = self._read(4, "block type", cut_ok=True)
                if not raw_type:
                    return
                if len(raw_type) < 4:
                    raise CaptureCutShort(f"the file ends inside the block header at byte {at}")
            if struct.unpack("<I", raw_type)[0] == _PCAPNG_SHB:
                length_raw = self._read(4, f"section header block at byte {at}")
                bom_raw = self._read(4, f"section header block at byte {at}")
                if struct.unpack("<I", bom_raw)[0] == _PCAPNG_BOM:
                    order = "<"
                elif struct.unpack(">I", bom_raw)[0] == _PCAPNG_BOM:
                    order = ">"
                else:
                    raise CaptureFileError(f"section header block at byte {at}: byte-order magic "
                                           f"{bom_raw.hex()} is not 1a2b3c4d")
                (length,) = struct.unpack(order + "I", length_raw)
                self._check_length(length, at, "section header", 28)
                body = bom_raw + self._read(length - 12 - 4 + 4, f"section header block at byte {at}")
                body, trailer = body[:-4], body[-4:]
                interfaces = []  # a new section starts its own interface numbering
                btype = _PCAPNG_SHB
            else:
                (btype,) = struct.unpack(order + "I", raw_type)
                length_raw = self._read(4, f"block at byte {at} (type {btype:#x})")
                (length,) = struct.unpack(order + "I", length_raw)
                self._check_length(length, at, f"block (type {btype:#x})", 12)
                rest = self._read(length - 8, f"block at byte {at} (type {btype:#x}, length {length})")
                body, trailer = rest[:-4], rest[-4:]
            (trailing,) = struct.unpack(order + "I", trailer)
            if trailing != length:
                raise CaptureFileError(f"block at byte {at} (type {btype:#x}): trailing length {trailing} "
                                       f"differs from its length {length} (damaged file?)")
            if btype == _PCAPNG_SHB:
                major = struct.unpack_from(order + "H", body, 4)[0]
                if major != 1:
                    raise CaptureFileError(f"section header block at byte {at}: pcapng version {major} is not 1")
                continue
            if btype == _IDB:
                interfaces.append(self._interface(body, order, at))
                continue
            if btype not in (_EPB, _SPB, _OPB):
                continue  # name resolution, statistics, custom ... blocks carry no packets
            number += 1
            if btype == _SPB:
                iface = 0
                if len(body) < 4:
                    raise CaptureFileError(f"simple packet block at byte {at}: body of {len(body)} bytes")
                (wire_len,) = struct.unpack_from(order + "I", body)
                ticks = high = low = 0
                caplen = len(body) - 4
                if not interfaces:
                    raise CaptureFileError(f"simple packet block at byte {at} comes before any interface")
                snaplen = interfaces[0][1]
                caplen = min(caplen, wire_len, snaplen or caplen)
                data = body[4:4 + caplen]
            else:
                epb = btype == _EPB
                fmt, size = (order + "IIIII", 20) if epb else (order + "HHIIII", 20)
                if len(body) < size:
                    raise CaptureFileError(f"packet block at byte {at}: body of {len(body)} bytes is shorter "
                                           f"than its {size}-byte header")
                if epb:
                    iface, high, low, caplen, wire_len = struct.unpack_from(fmt, body)
                else:
                    iface, _, high, low, caplen, wire_len = struct.unpack_from(fmt, body)
                if caplen > len(body) - size:
                    raise CaptureFileError(f"packet block at byte {at}: captured length {caplen} exceeds the "
                                           f"{len(body) - size} bytes of the block")
                data = body[size:size + caplen]
                ticks = high << 32 | low
            if iface >= len(interfaces):
                raise CaptureFileError(f"packet block at byte {at}: interface {iface} was not described "
                                       f"({len(interfaces)} interface blocks in this section)")
            linktype, _, per_second, ts_offset = interfaces[iface]
            if not supported(linktype):
                self.skipped += 1
                if iface not in warned:
                    warned.add(iface)
                    self.warnings.append(f"interface {iface} has {_link_name(linktype)}: its packets are "
                                         "not decoded")
                continue
            timestamp = ticks / per_second + ts_offset if btype != _SPB else 0.0
            yield from self._record(linktype, data, max(wire_len, len(data)), timestamp, number, iface)

    def _check_length(self, length: int, at: int, what: str, minimum: int) -> None:
        if length < minimum or length % 4:
            raise CaptureFileError(f"{what} block at byte {at}: length {length} is "
                                   + (f"below {minimum}" if length < minimum else "not a multiple of 4"))
        if length > MAX_BLOCK:
            raise CaptureFileError(f"{what} block at byte {at}: length {length} exceeds {MAX_BLOCK} "
                                   "(damaged file?)")

    @staticmethod
    def _interface(body: bytes, order: str, at: int) -> tuple[int, int, float, float]:
        if len(body) < 8:
            raise CaptureFileError(f"interface description block at byte {at}: body of {len(body)} bytes")
        linktype, _, snaplen = struct.unpack_from(order + "HHI", body)
        per_second, ts_offset = 1_000_000.0, 0.0
        pos = 8
        while pos + 4 <= len(body):
            code, size = struct.unpack_from(order + "HH", body, pos)
            value = body[pos + 4:pos + 4 + size]
            if code == _OPT_END:
                break
            if len(value) < size:
                raise CaptureFileError(f"interface description block at byte {at}: option {code} of {size} "
                                       f"bytes runs past the block")
            if code == _IF_TSRESOL and size == 1:
                exponent = value[0] & 0x7F
                per_second = float(2 ** exponent if value[0] & 0x80 else 10 ** exponent)
            elif code == _IF_TSOFFSET and size == 8:
                (ts_offset,) = struct.unpack(order + "q", value)
            pos += 4 + (size + 3) // 4 * 4
        return linktype, snaplen, per_second, float(ts_offset)

    def __iter__(self) -> Iterator[CaptureRecord]:
        return self._pcap_records() if self.format == "pcap" else self._pcapng_records()


class PcapWriter:
    """Writes Ethernet frames to a classic pcap (microseconds), keeping each frame's wire length."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, MAX_RECORD, LINKTYPE_ETHERNET))

    def write(self, frame: bytes, timestamp: float, wire_len: int | None = None) -> None:
        usec = round(timestamp * 1_000_000) if 0 <= timestamp < 2**32 else 0  # pcap keeps 32-bit seconds
        sec, usec = divmod(usec, 1_000_000)
        self._f.write(struct.pack("<IIII", sec, usec, len(frame), max(wire_len or 0, len(frame))) + frame)
        self._f.flush()  # usable while still capturing
