import dataclasses
import ipaddress
import struct

import pytest

from packet_helpers import arp_request, ether, mac
from varpd.packet import (ArpRequest, PacketError, build_arp_reply, build_gratuitous_arp,
                          parse_arp_request)

ASKER = "52:54:00:aa:bb:cc"
ANSWER = "02:08:20:11:22:33"


def test_parse_request() -> None:
    req = parse_arp_request(arp_request(ASKER, "10.0.0.5", "10.0.0.9"))
    assert req == ArpRequest(src_mac=ASKER, sender_mac=ASKER,
                             sender_ip=ipaddress.IPv4Address("10.0.0.5"),
                             target_ip=ipaddress.IPv4Address("10.0.0.9"), vlan=None)
    assert not req.is_probe


def test_reply_is_byte_exact() -> None:
    req = parse_arp_request(arp_request(ASKER, "10.0.0.5", "10.0.0.9"))
    reply = build_arp_reply(req, "02:08:20:11:22:33")
    assert len(reply) == 42
    dst, src, etype = struct.unpack("!6s6sH", reply[:14])
    assert (dst, src, etype) == (mac(ASKER), mac(ANSWER), 0x0806)
    hrd, pro, hln, pln, op, sha, spa, tha, tpa = struct.unpack("!HHBBH6s4s6s4s", reply[14:])
    assert (hrd, pro, hln, pln, op) == (1, 0x0800, 6, 4, 2)
    assert sha == mac(ANSWER) and spa == bytes([10, 0, 0, 9])
    assert tha == mac(ASKER) and tpa == bytes([10, 0, 0, 5])


def test_vlan_request_gets_vlan_reply() -> None:
    req = parse_arp_request(arp_request(ASKER, "10.0.0.5", "10.0.0.9", vlan=42))
    assert req is not None and req.vlan == 42
    reply = build_arp_reply(req, ANSWER)
    assert struct.unpack("!HHH", reply[12:18]) == (0x8100, 42, 0x0806)
    assert reply[18:] == build_arp_reply(dataclasses.replace(req, vlan=None), ANSWER)[14:]


def test_not_requests() -> None:
    assert parse_arp_request(arp_request(ASKER, "10.0.0.5", "10.0.0.9", op=2)) is None
    assert parse_arp_request(arp_request(ASKER, "10.0.0.5", "10.0.0.5")) is None  # gratuitous
    assert parse_arp_request(ether("ff:ff:ff:ff:ff:ff", ASKER, 0x0800, bytes(46))) is None
    ipv6_arp = struct.pack("!HHBBH", 1, 0x86DD, 6, 4, 1) + bytes(20)
    assert parse_arp_request(ether("ff:ff:ff:ff:ff:ff", ASKER, 0x0806, ipv6_arp)) is None


def test_probe_is_parsed_and_flagged() -> None:
    req = parse_arp_request(arp_request(ASKER, "0.0.0.0", "10.0.0.9"))
    assert req is not None and req.is_probe


def test_truncated() -> None:
    frame = arp_request(ASKER, "10.0.0.5", "10.0.0.9", pad=False)
    for n in range(len(frame)):
        with pytest.raises(PacketError):
            parse_arp_request(frame[:n])


def test_gratuitous() -> None:
    frame = build_gratuitous_arp(ANSWER, ipaddress.IPv4Address("10.0.0.9"))
    assert frame[:14] == mac("ff:ff:ff:ff:ff:ff") + mac(ANSWER) + b"\x08\x06"
    fields = struct.unpack("!HHBBH6s4s6s4s", frame[14:])
    assert fields == (1, 0x0800, 6, 4, 1, mac(ANSWER), bytes([10, 0, 0, 9]), bytes(6), bytes([10, 0, 0, 9]))
    assert parse_arp_request(frame) is None


def test_bad_answer_mac() -> None:
    req = parse_arp_request(arp_request(ASKER, "10.0.0.5", "10.0.0.9"))
    with pytest.raises(PacketError, match="nope"):
        build_arp_reply(req, "nope")
