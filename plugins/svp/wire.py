"""The SVP wire format (illumos libvarpd_svp_prot.h): pure encode/decode, no I/O.

Every message is a 16-byte header followed by `size` bytes of payload, all
integers big-endian (network order)::

     0               1               2               3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-------------------------------+-------------------------------+
    |        version (u16) = 1      |            op (u16)           |
    +-------------------------------+-------------------------------+
    |                    payload size (u32, bytes)                  |
    +---------------------------------------------------------------+
    |                   request id (u32, echoed by the reply)       |
    +---------------------------------------------------------------+
    |                         crc32 (u32)                           |
    +---------------------------------------------------------------+

crc32 = ~crc32(-1, header with crc32 = 0 ‖ payload), with the reflected CRC-32
polynomial 0xEDB88320: starting from all ones and complementing at the end is
exactly the standard CRC-32 (ISO-HDLC, what zlib/binascii.crc32 compute), so
`binascii.crc32(header0 + payload)` is the value.

Addresses are always 16 bytes: an IPv4 address travels IPv4-mapped
(::ffff:a.b.c.d) and is decoded back to an `IPv4Address`.  MACs are canonical
lower-case strings ("de:ad:be:ef:00:01").  Anything that does not fit —
wrong version, bad CRC, a short or overlong payload, an unknown op or log
record type — raises `SvpProtocolError`.
"""

from __future__ import annotations

import binascii
import enum
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar, Union

IPAddress = Union[IPv4Address, IPv6Address]

VERSION = 1
HEADER_SIZE = 16
MAX_PAYLOAD = 1 << 20  # 1 MiB: no legitimate message comes near it (a log reply is capped by its request)
DEFAULT_PORT = 1296
DEFAULT_UNDERLAY_PORT = 1339

_HEADER = struct.Struct(">HHIII")


class Op(enum.IntEnum):
    PING = 0x01
    PONG = 0x02
    VL2_REQ = 0x03
    VL2_ACK = 0x04
    VL3_REQ = 0x05
    VL3_ACK = 0x06
    BULK_REQ = 0x07
    BULK_ACK = 0x08
    LOG_REQ = 0x09
    LOG_ACK = 0x0A
    LOG_RM = 0x0B
    LOG_RM_ACK = 0x0C
    SHOOTDOWN = 0x0D


class Status(enum.IntEnum):
    OK = 0
    FATAL = 1
    NOTFOUND = 2
    BADL3TYPE = 3
    BADBULK = 4


class L3Type(enum.IntEnum):
    IP = 1  # IPv4, carried IPv4-mapped
    IPV6 = 2


class LogType(enum.IntEnum):
    VL2 = 1
    VL3 = 2


class SvpProtocolError(Exception):
    """A frame that is not valid SVP; `kind` names the problem (version, crc, truncated, size, op, value)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# -- helpers ----------------------------------------------------------------------------
def crc32(header_zero_crc: bytes, payload: bytes = b"") -> int:
    """~crc32(-1, header ‖ payload): the standard CRC-32, see the module doc."""
    return binascii.crc32(payload, binascii.crc32(header_zero_crc)) & 0xFFFFFFFF


def mac_to_bytes(mac: str) -> bytes:
    try:
        raw = bytes.fromhex(mac.replace(":", "").replace("-", "")) if isinstance(mac, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise SvpProtocolError("value", f"{mac!r} is not a MAC address")
    return raw


def mac_from_bytes(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def addr_to_bytes(ip: IPAddress) -> bytes:
    """16 bytes; IPv4 as IPv4-mapped IPv6."""
    if isinstance(ip, IPv4Address):
        return b"\x00" * 10 + b"\xff\xff" + ip.packed
    if isinstance(ip, IPv6Address):
        return ip.packed
    raise SvpProtocolError("value", f"{ip!r} is not an IP address")


def addr_from_bytes(raw: bytes) -> IPAddress:
    """IPv4-mapped → IPv4Address, otherwise IPv6Address."""
    v6 = IPv6Address(bytes(raw))
    return v6.ipv4_mapped or v6


def _need(payload: bytes, size: int, what: str, *, exact: bool = True) -> None:
    if len(payload) < size:
        raise SvpProtocolError("truncated", f"{what}: {len(payload)} bytes, expected {size}")
    if exact and len(payload) != size:
        raise SvpProtocolError("size", f"{what}: {len(payload)} bytes, expected {size}")


def _status(value: int, what: str) -> int:
    """Statuses are kept as plain ints when unknown (a newer server), as Status when known."""
    try:
        return Status(value)
    except ValueError:
        return value


# -- header ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Header:
    """The 16-byte header (diagram in the module doc)."""

    op: int
    size: int
    id: int
    crc: int = 0
    version: int = VERSION

    def pack(self) -> bytes:
        return _HEADER.pack(self.version, self.op, self.size, self.id, self.crc)

    @classmethod
    def unpack(cls, data: bytes) -> "Header":
        """Decode and check version and size (not the CRC: that needs the payload)."""
        if len(data) < HEADER_SIZE:
            raise SvpProtocolError("truncated", f"header: {len(data)} bytes, expected {HEADER_SIZE}")
        version, op, size, req_id, crc = _HEADER.unpack_from(data)
        if version != VERSION:
            raise SvpProtocolError("version", f"unsupported SVP version {version} (expected {VERSION})")
        if size > MAX_PAYLOAD:
            raise SvpProtocolError("size", f"payload of {size} bytes exceeds {MAX_PAYLOAD}")
        return cls(op, size, req_id, crc, version)


# -- messages ------------------------------------------------------------------------------
class Message:
    OP: ClassVar[Op]

    def pack(self) -> bytes:  # the payload
        raise NotImplementedError

    @classmethod
    def unpack(cls, payload: bytes) -> "Message":
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Ping(Message):
    """PING 0x01: no payload."""

    OP: ClassVar[Op] = Op.PING

    def pack(self) -> bytes:
        return b""

    @classmethod
    def unpack(cls, payload: bytes) -> "Ping":
        _need(payload, 0, "PING")
        return cls()


@dataclass(frozen=True, slots=True)
class Pong(Message):
    """PONG 0x02: no payload."""

    OP: ClassVar[Op] = Op.PONG

    def pack(self) -> bytes:
        return b""

    @classmethod
    def unpack(cls, payload: bytes) -> "Pong":
        _need(payload, 0, "PONG")
        return cls()


@dataclass(frozen=True, slots=True)
class Vl2Req(Message):
    """VL2_REQ 0x03, 12 bytes: where does this MAC live?

    +-----------------------------------------------+---------------+
    |                   mac[6]                      |    pad[2]     |
    +-----------------------------------------------+---------------+
    |                        vnetid (u32)                           |
    +---------------------------------------------------------------+
    """

    OP: ClassVar[Op] = Op.VL2_REQ
    _S: ClassVar[struct.Struct] = struct.Struct(">6s2xI")
    mac: str
    vnetid: int

    def pack(self) -> bytes:
        return self._S.pack(mac_to_bytes(self.mac), self.vnetid)

    @classmethod
    def unpack(cls, payload: bytes) -> "Vl2Req":
        _need(payload, cls._S.size, "VL2_REQ")
        mac, vnetid = cls._S.unpack(payload)
        return cls(mac_from_bytes(mac), vnetid)


@dataclass(frozen=True, slots=True)
class Vl2Ack(Message):
    """VL2_ACK 0x04, 20 bytes: the underlay destination of the MAC.

    +-------------------------------+-------------------------------+
    |         status (u16)          |          port (u16)           |
    +-------------------------------+-------------------------------+
    |              addr[16] (IPv4-mapped for IPv4)                  |
    +---------------------------------------------------------------+
    """

    OP: ClassVar[Op] = Op.VL2_ACK
    _S: ClassVar[struct.Struct] = struct.Struct(">HH16s")
    status: int
    port: int = 0
    addr: IPAddress = IPv6Address(0)

    def pack(self) -> bytes:
        return self._S.pack(self.status, self.port, addr_to_bytes(self.addr))

    @classmethod
    def unpack(cls, payload: bytes) -> "Vl2Ack":
        _need(payload, cls._S.size, "VL2_ACK")
        status, port, addr = cls._S.unpack(payload)
        return cls(_status(status, "VL2_ACK"), port, addr_from_bytes(addr))


@dataclass(frozen=True, slots=True)
class Vl3Req(Message):
    """VL3_REQ 0x05, 24 bytes: which MAC owns this overlay IP?

    +---------------------------------------------------------------+
    |             ip[16] (IPv4-mapped when type = 1)                |
    +---------------------------------------------------------------+
    |             type (u32): 1 IPv4 (mapped), 2 IPv6               |
    +---------------------------------------------------------------+
    |                        vnetid (u32)                           |
    +---------------------------------------------------------------+

    `l3type` 0 means "derive from ip" when packing; decoding keeps the
    number on the wire (even an unknown one: the server answers BADL3TYPE).
    """

    OP: ClassVar[Op] = Op.VL3_REQ
    _S: ClassVar[struct.Struct] = struct.Struct(">16sII")
    ip: IPAddress
    vnetid: int
    l3type: int = 0

    def __post_init__(self) -> None:
        if not self.l3type:
            object.__setattr__(self, "l3type", L3Type.IP if self.ip.version == 4 else L3Type.IPV6)

    def pack(self) -> bytes:
        return self._S.pack(addr_to_bytes(self.ip), self.l3type, self.vnetid)

    @classmethod
    def unpack(cls, payload: bytes) -> "Vl3Req":
        _need(payload, cls._S.size, "VL3_REQ")
        raw, l3type, vnetid = cls._S.unpack(payload)
        ip = addr_from_bytes(raw) if l3type == L3Type.IP else IPv6Address(raw)
        try:
            l3type = L3Type(l3type)
        except ValueError:
            pass
        return cls(ip, vnetid, l3type)


@dataclass(frozen=True, slots=True)
class Vl3Ack(Message):
    """VL3_ACK 0x06, 28 bytes: the owner's MAC and its underlay destination.

    +---------------------------------------------------------------+
    |                        status (u32)                           |
    +---------------------------------------------------------------+
    |                   mac[6]                      |  port (u16)   |
    +-----------------------------------------------+---------------+
    |              ip[16] (underlay, IPv4-mapped for IPv4)          |
    +---------------------------------------------------------------+
    """

    OP: ClassVar[Op] = Op.VL3_ACK
    _S: ClassVar[struct.Struct] = struct.Struct(">I6sH16s")
    status: int
    mac: str = "00:00:00:00:00:00"
    port: int = 0
    ip: IPAddress = IPv6Address(0)

    def pack(self) -> bytes:
        return self._S.pack(self.status, mac_to_bytes(self.mac), self.port, addr_to_bytes(self.ip))

    @classmethod
    def unpack(cls, payload: bytes) -> "Vl3Ack":
        _need(payload, cls._S.size, "VL3_ACK")
        status, mac, port, ip = cls._S.unpack(payload)
        return cls(_status(status, "VL3_ACK"), mac_from_bytes(mac), port, addr_from_bytes(ip))


@dataclass(frozen=True, slots=True)
class LogReq(Message):
    """LOG_REQ 0x09, 20 bytes: send me (at most `count` bytes of) my shootdown log.

    +---------------------------------------------------------------+
    |            count (u32): most bytes of records wanted          |
    +---------------------------------------------------------------+
    |          ip[16]: the requester's underlay IP (svp/underlay_ip)|
    +---------------------------------------------------------------+
    """

    OP: ClassVar[Op] = Op.LOG_REQ
    _S: ClassVar[struct.Struct] = struct.Struct(">I16s")
    count: int
    ip: IPAddress

    def pack(self) -> bytes:
        return self._S.pack(self.count, addr_to_bytes(self.ip))

    @classmethod
    def unpack(cls, payload: bytes) -> "LogReq":
        _need(payload, cls._S.size, "LOG_REQ")
        count, ip = cls._S.unpack(payload)
        return cls(count, addr_from_bytes(ip))


@dataclass(frozen=True, slots=True)
class LogVl2:
    """A VL2 log record, 32 bytes: this MAC moved or disappeared (drop what you know of it).

    +---------------------------------------------------------------+
    |                       type (u32) = 1                          |
    +---------------------------------------------------------------+
    |                       id[16] (a UUID)                         |
    +-----------------------------------------------+---------------+
    |                   mac[6]                      |    pad[2]     |
    +-----------------------------------------------+---------------+
    |                        vnetid (u32)                           |
    +---------------------------------------------------------------+
    """

    TYPE: ClassVar[LogType] = LogType.VL2
    _S: ClassVar[struct.Struct] = struct.Struct(">I16s6s2xI")
    id: bytes
    mac: str
    vnetid: int

    def pack(self) -> bytes:
        return self._S.pack(self.TYPE, _id16(self.id), mac_to_bytes(self.mac), self.vnetid)

    @classmethod
    def unpack(cls, data: bytes) -> "LogVl2":
        _, rid, mac, vnetid = cls._S.unpack(data)
        return cls(rid, mac_from_bytes(mac), vnetid)


@dataclass(frozen=True, slots=True)
class LogVl3:
    """A VL3 log record, 44 bytes: the owner of this overlay IP changed (look it up again).

    +---------------------------------------------------------------+
    |                       type (u32) = 2                          |
    +---------------------------------------------------------------+
    |                       id[16] (a UUID)                         |
    +---------------------------------------------------------------+
    |              ip[16] (overlay, IPv4-mapped for IPv4)           |
    +-------------------------------+-------------------------------+
    |            pad[2]             |          vlan (u16)           |
    +-------------------------------+-------------------------------+
    |                        vnetid (u32)                           |
    +---------------------------------------------------------------+
    """

    TYPE: ClassVar[LogType] = LogType.VL3
    _S: ClassVar[struct.Struct] = struct.Struct(">I16s16s2xHI")
    id: bytes
    ip: IPAddress
    vnetid: int
    vlan: int = 0

    def pack(self) -> bytes:
        return self._S.pack(self.TYPE, _id16(self.id), addr_to_bytes(self.ip), self.vlan, self.vnetid)

    @classmethod
    def unpack(cls, data: bytes) -> "LogVl3":
        _, rid, ip, vlan, vnetid = cls._S.unpack(data)
        return cls(rid, addr_from_bytes(ip), vnetid, vlan)


LogRecord = Union[LogVl2, LogVl3]
_RECORDS = {LogType.VL2: LogVl2, LogType.VL3: LogVl3}


def _id16(rid: bytes) -> bytes:
    if not isinstance(rid, (bytes, bytearray)) or len(rid) != 16:
        raise SvpProtocolError("value", f"a log record id is 16 bytes, not {rid!r}")
    return bytes(rid)


def record_size(rec: LogRecord) -> int:
    return rec._S.size


@dataclass(frozen=True, slots=True)
class LogAck(Message):
    """LOG_ACK 0x0A, 4 + records: the status, then VL2 (32 B) and VL3 (44 B) records back to back.

    +---------------------------------------------------------------+
    |                        status (u32)                           |
    +---------------------------------------------------------------+
    |     record, record, ... (each starts with its type u32)       |
    +---------------------------------------------------------------+
    """

    OP: ClassVar[Op] = Op.LOG_ACK
    status: int
    records: tuple[LogRecord, ...] = field(default_factory=tuple)

    def pack(self) -> bytes:
        return struct.pack(">I", self.status) + b"".join(r.pack() for r in self.records)

    @classmethod
    def unpack(cls, payload: bytes) -> "LogAck":
        _need(payload, 4, "LOG_ACK", exact=False)
        (status,) = struct.unpack_from(">I", payload)
        records, off = [], 4
        while off < len(payload):
            _need(payload[off:], 4, "LOG_ACK record type", exact=False)
            (rtype,) = struct.unpack_from(">I", payload, off)
            kind = _RECORDS.get(rtype)
            if kind is None:
                raise SvpProtocolError("value", f"LOG_ACK: unknown log record type {rtype} at offset {off}")
            _need(payload[off:], kind._S.size, f"LOG_ACK {kind.TYPE.name} record", exact=False)
            records.append(kind.unpack(payload[off:off + kind._S.size]))
            off += kind._S.size
        return cls(_status(status, "LOG_ACK"), tuple(records))


@dataclass(frozen=True, slots=True)
class LogRm(Message):
    """LOG_RM 0x0B, 4 + 16·count: these records are processed, delete them.

    +---------------------------------------------------------------+
    |                        count (u32)                            |
    +---------------------------------------------------------------+
    |                  ids[16 × count]                              |
    +---------------------------------------------------------------+
    """

    OP: ClassVar[Op] = Op.LOG_RM
    ids: tuple[bytes, ...]

    def pack(self) -> bytes:
        return struct.pack(">I", len(self.ids)) + b"".join(_id16(i) for i in self.ids)

    @classmethod
    def unpack(cls, payload: bytes) -> "LogRm":
        _need(payload, 4, "LOG_RM", exact=False)
        (count,) = struct.unpack_from(">I", payload)
        _need(payload, 4 + 16 * count, "LOG_RM")
        return cls(tuple(payload[4 + 16 * i:20 + 16 * i] for i in range(count)))


@dataclass(frozen=True, slots=True)
class LogRmAck(Message):
    """LOG_RM_ACK 0x0C, 4 bytes.

    +---------------------------------------------------------------+
    |                        status (u32)                           |
    +---------------------------------------------------------------+
    """

    OP: ClassVar[Op] = Op.LOG_RM_ACK
    status: int

    def pack(self) -> bytes:
        return struct.pack(">I", self.status)

    @classmethod
    def unpack(cls, payload: bytes) -> "LogRmAck":
        _need(payload, 4, "LOG_RM_ACK")
        return cls(_status(struct.unpack(">I", payload)[0], "LOG_RM_ACK"))


MESSAGES: dict[int, type[Message]] = {cls.OP: cls for cls in (
    Ping, Pong, Vl2Req, Vl2Ack, Vl3Req, Vl3Ack, LogReq, LogAck, LogRm, LogRmAck)}
#: the reply op of each request op
REPLIES: dict[int, int] = {Op.PING: Op.PONG, Op.VL2_REQ: Op.VL2_ACK, Op.VL3_REQ: Op.VL3_ACK,
                           Op.LOG_REQ: Op.LOG_ACK, Op.LOG_RM: Op.LOG_RM_ACK}


def reply_limit(msg: Message) -> int:
    """The largest payload a reply to request `msg` may have: a LOG_ACK its status and the byte
    count the LOG_REQ asked for, the others their fixed size (a client reads no more)."""
    if isinstance(msg, LogReq):
        return 4 + msg.count
    return {Op.PING: 0, Op.VL2_REQ: Vl2Ack._S.size, Op.VL3_REQ: Vl3Ack._S.size, Op.LOG_RM: 4}[msg.OP]


# -- frames ----------------------------------------------------------------------------------
def encode(msg: Message, req_id: int) -> bytes:
    """Header (with its CRC) ‖ payload."""
    payload = msg.pack()
    header0 = Header(msg.OP, len(payload), req_id & 0xFFFFFFFF).pack()
    crc = crc32(header0, payload)
    return Header(msg.OP, len(payload), req_id & 0xFFFFFFFF, crc).pack() + payload


def decode_payload(header: Header, payload: bytes) -> Message:
    """Check the CRC and decode the payload of `header`'s op."""
    if len(payload) != header.size:
        raise SvpProtocolError("truncated", f"payload of {len(payload)} bytes, header says {header.size}")
    want = crc32(Header(header.op, header.size, header.id, 0, header.version).pack(), payload)
    if want != header.crc:
        raise SvpProtocolError("crc", f"bad CRC 0x{header.crc:08x} (computed 0x{want:08x}) on op 0x{header.op:02x}")
    cls = MESSAGES.get(header.op)
    if cls is None:
        raise SvpProtocolError("op", f"unsupported op 0x{header.op:02x}")
    return cls.unpack(payload)


def decode(frame: bytes) -> tuple[Header, Message]:
    """One whole frame (header ‖ payload, nothing after) → (header, message)."""
    header = Header.unpack(frame[:HEADER_SIZE])
    body = frame[HEADER_SIZE:]
    if len(body) < header.size:
        raise SvpProtocolError("truncated", f"frame: {len(body)} payload bytes, header says {header.size}")
    if len(body) > header.size:
        raise SvpProtocolError("size", f"frame: {len(body) - header.size} bytes after the payload")
    return header, decode_payload(header, body)
