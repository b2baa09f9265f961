import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packet_helpers import arp_request, ether, ipv4_udp, ns_frame, udhcpc_discover
from varpd.packet import (ArpRequest, DhcpFrame, NeighborSolicitation, PacketError, classify,
                          parse_arp_request, parse_dhcp, parse_neighbor_solicitation)

# classify() has a last-resort guard; run the unguarded parsers too so fuzzing finds real leaks.
ENTRY_POINTS = (classify, parse_arp_request, parse_neighbor_solicitation, parse_dhcp)


def only_packet_errors(frame: bytes) -> None:
    for parse in ENTRY_POINTS:
        try:
            parse(frame)
        except PacketError as exc:
            assert "unparseable frame" not in str(exc), exc


MAC = "52:54:00:aa:bb:cc"
VALID = {
    "arp": arp_request(MAC, "10.0.0.5", "10.0.0.9"),
    "arp_vlan": arp_request(MAC, "10.0.0.5", "10.0.0.9", vlan=4094),
    "ns": ns_frame(MAC, "fd00::5", "fd00::9"),
    "ns_vlan": ns_frame(MAC, "fd00::5", "fd00::9", vlan=3),
    "dhcp": udhcpc_discover(MAC),
    "dhcp_vlan": udhcpc_discover(MAC, vlan=10),
}


def test_each_kind() -> None:
    assert isinstance(classify(VALID["arp"]), ArpRequest)
    assert isinstance(classify(VALID["ns"]), NeighborSolicitation)
    assert isinstance(classify(VALID["dhcp"]), DhcpFrame)


def test_vlan_tagged() -> None:
    arp = classify(VALID["arp_vlan"])
    assert isinstance(arp, ArpRequest) and arp.vlan == 4094
    assert classify(VALID["ns_vlan"]).vlan == 3
    assert classify(VALID["dhcp_vlan"]).vlan == 10


def test_other_traffic_is_none() -> None:
    tcp = ether("02:00:00:00:00:01", MAC, 0x0800,
                struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, bytes(4), bytes(4)) + bytes(20))
    assert classify(tcp) is None
    dns = ipv4_udp("10.0.0.5", "10.0.0.9", 1234, 53, b"q")
    assert classify(ether("02:00:00:00:00:01", MAC, 0x0800, dns)) is None
    assert classify(ether("02:00:00:00:00:01", MAC, 0x88CC, bytes(50))) is None  # LLDP
    assert classify(ether("02:00:00:00:00:01", MAC, 0x0042, bytes(66))) is None  # 802.3 length
    qinq = ether("ff:ff:ff:ff:ff:ff", MAC, 0x8100, struct.pack("!HH", 5, 0x8100) + VALID["arp"][12:])
    assert classify(qinq) is None


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_prefix_is_none_or_packet_error(name: str) -> None:
    frame = VALID[name]
    for n in range(len(frame) + 1):
        only_packet_errors(frame[:n])


@pytest.mark.parametrize("name", sorted(VALID))
def test_single_byte_corruption_is_none_or_packet_error(name: str) -> None:
    frame = VALID[name]
    for i in range(len(frame)):
        for value in (0x00, 0xFF, frame[i] ^ 0x80):
            only_packet_errors(frame[:i] + bytes((value,)) + frame[i + 1:])


def test_oversized_dhcp_rejected() -> None:
    with pytest.raises(PacketError, match="exceeds"):
        classify(VALID["dhcp"] + bytes(2000))


def test_not_bytes() -> None:
    with pytest.raises(PacketError):
        classify("not a frame")  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    only_packet_errors(data)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.binary(min_size=1, max_size=64), st.integers(0, 400))
def test_spliced_garbage(name: str, junk: bytes, at: int) -> None:
    frame = VALID[name]
    at = min(at, len(frame))
    only_packet_errors(frame[:at] + junk + frame[at + len(junk):])
