"""Byte-exact vectors of the SVP wire format (illumos libvarpd_svp_prot.h), written out by hand.

The CRC is checked against an independent, table-free CRC-32: illumos computes
`crc = -1; CRC32(crc, header-with-crc-0); CRC32(crc, payload); svp_crc32 = htonl(~crc)` with the
reflected table of polynomial 0xEDB88320, i.e. for every byte
`crc = (crc >> 8) ^ table[(crc ^ b) & 0xff]`, which is the same as eight rounds of
`crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)` after `crc ^= b` (the table is just those
eight rounds precomputed).  Starting at all ones and complementing at the end is the standard
CRC-32 (ISO-HDLC, zlib's), so binascii.crc32 must agree too.
"""
from __future__ import annotations

import binascii
import struct
from ipaddress import IPv4Address, IPv6Address

import pytest

from varpd_plugins.svp import wire
from varpd_plugins.svp.wire import (Header, L3Type, LogAck, LogReq, LogRm, LogRmAck, LogVl2, LogVl3, Op, Ping,
                                    Pong, Status, SvpProtocolError, Vl2Ack, Vl2Req, Vl3Ack, Vl3Req)


def crc32_bitwise(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    """illumos' CRC32 loop without the table; returns the running value (not yet complemented)."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc


def svp_crc(header0: bytes, payload: bytes) -> int:
    crc = crc32_bitwise(header0)  # CRC32(crc, hdr, sizeof, -1U, tab)
    crc = crc32_bitwise(payload, crc)  # CRC32(crc, buf, data, crc, tab)
    return ~crc & 0xFFFFFFFF


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


def frame(op: int, req_id: int, payload: bytes) -> bytes:
    """Header written with struct by hand (big-endian), CRC from the independent implementation."""
    header0 = struct.pack(">HHIII", 1, op, len(payload), req_id, 0)
    return header0[:12] + struct.pack(">I", svp_crc(header0, payload)) + payload


MAC = "de:ad:be:ef:00:01"
ID1 = bytes(range(16))
ID2 = bytes(range(16, 32))


# -- CRC ------------------------------------------------------------------------------------------
def test_the_independent_crc_is_the_standard_crc32():
    assert ~crc32_bitwise(b"123456789") & 0xFFFFFFFF == 0xCBF43926  # the CRC-32 check value
    for data in (b"", b"\x00", b"svp" * 100, bytes(range(256))):
        assert ~crc32_bitwise(data) & 0xFFFFFFFF == binascii.crc32(data)


def test_crc_covers_header_with_crc_zero_then_payload():
    header0 = h("0001 0003 0000000c 00000007 00000000")
    payload = h("deadbeef0001 0000 00000017")
    expected = svp_crc(header0, payload)
    assert expected == binascii.crc32(header0 + payload)
    assert wire.crc32(header0, payload) == expected
    assert expected == 0x13F8C103  # pinned: this exact frame, as any SVP implementation computes it


# -- header ---------------------------------------------------------------------------------------
def test_header_is_16_big_endian_bytes():
    hd = Header(op=Op.VL2_REQ, size=12, id=7, crc=0x13F8C103)
    assert hd.pack() == h("0001 0003 0000000c 00000007 13f8c103")
    assert len(hd.pack()) == wire.HEADER_SIZE == 16
    assert Header.unpack(hd.pack()) == hd
    assert Header(op=0x0C, size=0x01020304, id=0xFFFFFFFE).pack() == h("0001 000c 01020304 fffffffe 00000000")


def test_encode_gives_the_hand_written_frame():
    got = wire.encode(Vl2Req(MAC, 23), 7)
    assert got == h("0001 0003 0000000c 00000007 13f8c103  deadbeef0001 0000 00000017")
    assert got == frame(Op.VL2_REQ, 7, h("deadbeef0001 0000 00000017"))


# -- each message ---------------------------------------------------------------------------------
CASES = [
    (Ping(), ""),
    (Pong(), ""),
    (Vl2Req(MAC, 23), "deadbeef0001 0000 00000017"),
    (Vl2Req("00:00:5e:00:53:ff", 0xFFFFFF), "00005e0053ff 0000 00ffffff"),
    (Vl2Ack(Status.OK, 4789, IPv4Address("192.0.2.2")), "0000 12b5 00000000000000000000ffff c0000202"),
    (Vl2Ack(Status.OK, 1339, IPv6Address("2001:db8::7")), "0000 053b 20010db8000000000000000000000007"),
    (Vl2Ack(Status.NOTFOUND), "0002 0000 00000000000000000000000000000000"),
    (Vl3Req(IPv4Address("10.55.55.3"), 23), "00000000000000000000ffff 0a373703 00000001 00000017"),
    (Vl3Req(IPv6Address("fe80::4"), 23), "fe800000000000000000000000000004 00000002 00000017"),
    (Vl3Ack(Status.OK, MAC, 4789, IPv4Address("192.0.2.2")),
     "00000000 deadbeef0001 12b5 00000000000000000000ffff c0000202"),
    (Vl3Ack(Status.NOTFOUND), "00000002 000000000000 0000 00000000000000000000000000000000"),
    (Vl3Ack(Status.BADL3TYPE), "00000003 000000000000 0000 00000000000000000000000000000000"),
    (LogReq(8192, IPv4Address("192.0.2.1")), "00002000 00000000000000000000ffff c0000201"),
    (LogAck(Status.OK), "00000000"),
    (LogAck(Status.OK, (LogVl2(ID1, MAC, 23), LogVl3(ID2, IPv4Address("10.55.55.3"), 23, vlan=5),
                        LogVl3(ID1, IPv6Address("fe80::4"), 23))),
     "00000000"
     "00000001 000102030405060708090a0b0c0d0e0f deadbeef0001 0000 00000017"
     "00000002 101112131415161718191a1b1c1d1e1f 00000000000000000000ffff0a373703 0000 0005 00000017"
     "00000002 000102030405060708090a0b0c0d0e0f fe800000000000000000000000000004 0000 0000 00000017"),
    (LogRm((ID1, ID2)), "00000002 000102030405060708090a0b0c0d0e0f 101112131415161718191a1b1c1d1e1f"),
    (LogRm(()), "00000000"),
    (LogRmAck(Status.OK), "00000000"),
    (LogRmAck(Status.FATAL), "00000001"),
]


@pytest.mark.parametrize("msg,payload", CASES, ids=lambda v: type(v).__name__ if not isinstance(v, str) else "")
def test_message_vectors(msg, payload):
    raw = h(payload)
    assert msg.pack() == raw
    assert type(msg).unpack(raw) == msg
    full = frame(msg.OP, 0xA1B2C3D4, raw)
    assert wire.encode(msg, 0xA1B2C3D4) == full
    header, decoded = wire.decode(full)
    assert (header.op, header.size, header.id) == (msg.OP, len(raw), 0xA1B2C3D4)
    assert decoded == msg


def test_sizes_match_the_illumos_structs():
    assert len(Vl2Req(MAC, 1).pack()) == 12 and len(Vl2Ack(0).pack()) == 20
    assert len(Vl3Req(IPv4Address("10.0.0.1"), 1).pack()) == 24 and len(Vl3Ack(0).pack()) == 28
    assert len(LogReq(1, IPv4Address("10.0.0.1")).pack()) == 20
    assert len(LogVl2(ID1, MAC, 1).pack()) == 32 and len(LogVl3(ID1, IPv6Address("::1"), 1).pack()) == 44
    assert wire.record_size(LogVl2(ID1, MAC, 1)) == 32


def test_op_and_status_numbers():
    assert [int(o) for o in (Op.VL2_REQ, Op.VL2_ACK, Op.VL3_REQ, Op.VL3_ACK, Op.LOG_REQ, Op.LOG_ACK, Op.LOG_RM,
                             Op.LOG_RM_ACK)] == [3, 4, 5, 6, 9, 10, 11, 12]
    assert [int(s) for s in Status] == [0, 1, 2, 3, 4]
    assert (int(L3Type.IP), int(L3Type.IPV6)) == (1, 2)


def test_ipv4_is_returned_as_ipv4_and_unknown_l3_types_are_kept():
    ack = Vl2Ack.unpack(h("0000 12b5 00000000000000000000ffff c0000202"))
    assert ack.addr == IPv4Address("192.0.2.2") and isinstance(ack.addr, IPv4Address)
    req = Vl3Req.unpack(h("fe800000000000000000000000000004 00000009 00000017"))
    assert req.l3type == 9 and req.ip == IPv6Address("fe80::4")


# -- errors ---------------------------------------------------------------------------------------
def test_bad_crc_is_refused():
    good = bytearray(wire.encode(Vl2Req(MAC, 23), 1))
    good[15] ^= 0x01
    with pytest.raises(SvpProtocolError) as ei:
        wire.decode(bytes(good))
    assert ei.value.kind == "crc"
    body = bytearray(wire.encode(Vl2Req(MAC, 23), 1))
    body[-1] ^= 0x80  # payload corrupted, header intact
    with pytest.raises(SvpProtocolError, match="CRC"):
        wire.decode(bytes(body))


def test_bad_version_is_refused():
    raw = struct.pack(">HHIII", 2, 3, 12, 1, 0) + h("deadbeef0001 0000 00000017")
    with pytest.raises(SvpProtocolError) as ei:
        wire.decode(raw)
    assert ei.value.kind == "version"


@pytest.mark.parametrize("cut", [0, 5, 15, 16, 20, 27])
def test_truncated_frames_are_refused(cut):
    raw = wire.encode(Vl2Req(MAC, 23), 1)  # 28 bytes
    with pytest.raises(SvpProtocolError) as ei:
        wire.decode(raw[:cut])
    assert ei.value.kind == "truncated"


def test_truncated_or_malformed_payloads_are_refused():
    with pytest.raises(SvpProtocolError, match="truncated|expected"):
        Vl2Ack.unpack(h("0000 12b5 0000"))
    with pytest.raises(SvpProtocolError) as ei:
        LogAck.unpack(h("00000000 00000001 0001"))  # a VL2 record cut short
    assert ei.value.kind == "truncated"
    with pytest.raises(SvpProtocolError) as ei:
        LogAck.unpack(h("00000000 00000007") + bytes(28))  # unknown record type
    assert ei.value.kind == "value"
    with pytest.raises(SvpProtocolError):
        LogRm.unpack(h("00000002") + ID1)  # says 2 ids, carries 1
    with pytest.raises(SvpProtocolError) as ei:
        wire.decode(wire.encode(Vl2Req(MAC, 23), 1) + b"x")
    assert ei.value.kind == "size"


def test_unknown_op_and_oversized_payload_are_refused():
    with pytest.raises(SvpProtocolError) as ei:
        wire.decode(frame(0x42, 1, b""))
    assert ei.value.kind == "op"
    with pytest.raises(SvpProtocolError) as ei:
        Header.unpack(struct.pack(">HHIII", 1, 3, wire.MAX_PAYLOAD + 1, 1, 0))
    assert ei.value.kind == "size"


def test_bad_values_are_refused_when_packing():
    with pytest.raises(SvpProtocolError):
        Vl2Req("not-a-mac", 1).pack()
    with pytest.raises(SvpProtocolError):
        LogRm((b"short",)).pack()
