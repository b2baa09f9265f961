import ipaddress
import struct

import pytest

from packet_helpers import (bootp, checksum, ether, ip4, ipv4_udp, mac, ones_sum, parse_options,
                            udhcpc_discover)
from varpd.packet import (DHCPACK, DHCPDISCOVER, DHCPNAK, DHCPOFFER, DHCPREQUEST, DhcpOption,
                          PacketError, build_dhcp_reply, parse_dhcp, readdress)

CLIENT = "52:54:00:12:34:56"
SERVER_MAC = "02:08:20:00:00:01"
IP = ipaddress.IPv4Address


def reply(request, message_type=DHCPOFFER, **kw):
    args = dict(message_type=message_type, server_mac=SERVER_MAC, server_ip=IP("10.0.0.1"),
                yiaddr=IP("10.0.0.50"), subnet_mask=IP("255.255.255.0"), router=IP("10.0.0.1"),
                dns=(IP("10.0.0.2"), IP("10.0.0.3")), lease_seconds=3600) | kw
    return build_dhcp_reply(request, **args)


def unpack_reply(frame: bytes) -> dict:
    """Pull apart an untagged reply with struct, checking both checksums on the way."""
    dst, src, etype = struct.unpack("!6s6sH", frame[:14])
    assert etype == 0x0800
    ip = frame[14:]
    vhl, _tos, total, _id, _off, ttl, proto, _sum, sip, dip = struct.unpack("!BBHHHBBH4s4s", ip[:20])
    assert vhl == 0x45 and proto == 17 and total == len(ip)
    assert checksum(ip[:20]) == 0, "IPv4 header checksum"
    udp = ip[20:]
    sport, dport, ulen, usum = struct.unpack("!HHHH", udp[:8])
    assert (sport, dport, ulen) == (67, 68, len(udp))
    assert usum != 0
    assert ones_sum(sip + dip + struct.pack("!BBH", 0, 17, ulen) + udp) == 0xFFFF, "UDP checksum"
    body = udp[8:]
    assert len(body) >= 300
    op, htype, hlen, _hops, xid, _secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr = \
        struct.unpack("!BBBBIHH4s4s4s4s16s", body[:44])
    assert (htype, hlen) == (1, 6) and siaddr == giaddr == bytes(4)
    assert struct.unpack("!I", body[236:240])[0] == 0x63825363
    return dict(dst=dst, src=src, sip=sip, dip=dip, ttl=ttl, op=op, xid=xid, flags=flags,
                ciaddr=ciaddr, yiaddr=yiaddr, chaddr=chaddr, options=parse_options(body[240:]))


def test_parse_udhcpc_discover() -> None:
    frame = udhcpc_discover(CLIENT)
    d = parse_dhcp(frame)
    assert d is not None
    assert (d.src_mac, d.dst_mac, d.chaddr) == (CLIENT, "ff:ff:ff:ff:ff:ff", CLIENT)
    assert (d.src_ip, d.dst_ip, d.src_port, d.dst_port) == (IP("0.0.0.0"), IP("255.255.255.255"), 68, 67)
    assert (d.op, d.xid, d.flags, d.message_type) == (1, 0x3903F326, 0, DHCPDISCOVER)
    assert d.ciaddr == d.yiaddr == IP("0.0.0.0")
    assert d.requested_ip is None and d.server_id is None and d.vlan is None
    assert [code for code, _ in d.options] == [53, 61, 57, 55, 12, 60]
    assert d.option(DhcpOption.HOSTNAME) == b"vm1"
    assert d.option(DhcpOption.PARAM_LIST) == bytes((1, 3, 6, 12, 15, 28, 42))
    assert d.raw == frame


def test_parse_request_with_requested_ip_and_server_id() -> None:
    opts = bytes((53, 1, 3, 50, 4)) + ip4("10.0.0.50") + bytes((54, 4)) + ip4("10.0.0.1") + b"\xff"
    frame = ether("ff:ff:ff:ff:ff:ff", CLIENT, 0x0800,
                  ipv4_udp("0.0.0.0", "255.255.255.255", 68, 67, bootp(1, 7, CLIENT, opts)), vlan=12)
    d = parse_dhcp(frame)
    assert d.message_type == DHCPREQUEST and d.vlan == 12
    assert d.requested_ip == IP("10.0.0.50") and d.server_id == IP("10.0.0.1")


def test_parse_server_direction_and_other_ports() -> None:
    offer = ether(CLIENT, SERVER_MAC, 0x0800,
                  ipv4_udp("10.0.0.1", "10.0.0.50", 67, 68, bootp(2, 7, CLIENT, b"\x35\x01\x02\xff")))
    assert parse_dhcp(offer).op == 2
    dns = ether(CLIENT, SERVER_MAC, 0x0800, ipv4_udp("10.0.0.1", "10.0.0.50", 53, 68, bytes(300)))
    assert parse_dhcp(dns) is None
    assert parse_dhcp(ether(CLIENT, SERVER_MAC, 0x0806, bytes(28))) is None


@pytest.mark.parametrize("opts, match", [
    (b"\x35\x01", "truncated DHCP option"),
    (b"\x35\x02\x01\x01\xff", "MESSAGE_TYPE"),
    (b"\x32\x03\x0a\x00\x00\xff", "REQUESTED_IP"),
])
def test_malformed_options(opts: bytes, match: str) -> None:
    frame = ether("ff:ff:ff:ff:ff:ff", CLIENT, 0x0800,
                  ipv4_udp("0.0.0.0", "255.255.255.255", 68, 67, bootp(1, 7, CLIENT, opts)))
    with pytest.raises(PacketError, match=match):
        parse_dhcp(frame)


def test_bad_magic_and_ip_checksum() -> None:
    body = bytearray(bootp(1, 7, CLIENT, b"\xff"))
    body[236] = 0
    frame = ether("ff:ff:ff:ff:ff:ff", CLIENT, 0x0800,
                  ipv4_udp("0.0.0.0", "255.255.255.255", 68, 67, bytes(body)))
    with pytest.raises(PacketError, match="magic"):
        parse_dhcp(frame)
    frame = bytearray(udhcpc_discover())
    frame[14 + 10] ^= 0xFF
    with pytest.raises(PacketError, match="checksum"):
        parse_dhcp(bytes(frame))


def test_truncated_prefixes() -> None:
    frame = udhcpc_discover()
    for n in range(len(frame)):
        with pytest.raises(PacketError):
            parse_dhcp(frame[:n])


def test_oversized() -> None:
    frame = udhcpc_discover()
    ok = frame + bytes(1518 - len(frame))
    assert parse_dhcp(ok) is not None  # trailing link padding is fine
    with pytest.raises(PacketError, match="frame of 1519 bytes exceeds"):
        parse_dhcp(ok + b"\x00")
    tagged = udhcpc_discover(vlan=5)
    assert parse_dhcp(tagged + bytes(1522 - len(tagged))) is not None
    with pytest.raises(PacketError, match="frame of 1523 bytes exceeds"):
        parse_dhcp(tagged + bytes(1523 - len(tagged)))


def test_readdress_changes_only_destination() -> None:
    frame = udhcpc_discover()
    out = readdress(frame, "02:AA:BB:CC:DD:EE")
    assert out[:6] == mac("02:aa:bb:cc:dd:ee") and out[6:] == frame[6:] and len(out) == len(frame)
    with pytest.raises(PacketError):
        readdress(frame[:10], SERVER_MAC)
    with pytest.raises(PacketError, match="bogus"):
        readdress(frame, "bogus")


def test_offer_unicast_when_broadcast_bit_clear() -> None:
    r = unpack_reply(reply(parse_dhcp(udhcpc_discover())))
    assert r["dst"] == mac(CLIENT) and r["src"] == mac(SERVER_MAC)
    assert r["sip"] == ip4("10.0.0.1") and r["dip"] == ip4("10.0.0.50")
    assert (r["op"], r["xid"], r["flags"]) == (2, 0x3903F326, 0)
    assert r["yiaddr"] == ip4("10.0.0.50") and r["ciaddr"] == bytes(4)
    assert r["chaddr"] == mac(CLIENT) + bytes(10)
    o = r["options"]
    assert o[53] == bytes([DHCPOFFER]) and o[54] == ip4("10.0.0.1")
    assert struct.unpack("!III", o[51] + o[58] + o[59]) == (3600, 1800, 3150)
    assert o[1] == ip4("255.255.255.0") and o[3] == ip4("10.0.0.1")
    assert o[6] == ip4("10.0.0.2") + ip4("10.0.0.3")
    assert o[61] == b"\x01" + mac(CLIENT)  # RFC 6842 echo


def test_broadcast_flag_or_forced_broadcast() -> None:
    flagged = parse_dhcp(udhcpc_discover(flags=0x8000))
    r = unpack_reply(reply(flagged, DHCPACK, router=None, dns=()))
    assert (r["dst"], r["dip"], r["flags"]) == (mac("ff:ff:ff:ff:ff:ff"), ip4("255.255.255.255"), 0x8000)
    assert 3 not in r["options"] and 6 not in r["options"]
    forced = unpack_reply(reply(parse_dhcp(udhcpc_discover()), broadcast=True))
    assert (forced["dst"], forced["dip"]) == (mac("ff:ff:ff:ff:ff:ff"), ip4("255.255.255.255"))


def test_ack_to_renewing_client_goes_to_ciaddr() -> None:
    opts = b"\x35\x01\x03\xff"
    frame = ether(SERVER_MAC, CLIENT, 0x0800,
                  ipv4_udp("10.0.0.50", "10.0.0.1", 68, 67, bootp(1, 9, CLIENT, opts, ciaddr="10.0.0.50")))
    r = unpack_reply(reply(parse_dhcp(frame), DHCPACK, broadcast=True))
    assert (r["dst"], r["dip"], r["ciaddr"]) == (mac(CLIENT), ip4("10.0.0.50"), ip4("10.0.0.50"))


def test_nak_is_broadcast_and_bare() -> None:
    r = unpack_reply(reply(parse_dhcp(udhcpc_discover()), DHCPNAK))
    assert (r["dst"], r["dip"]) == (mac("ff:ff:ff:ff:ff:ff"), ip4("255.255.255.255"))
    assert r["yiaddr"] == bytes(4)
    assert set(r["options"]) == {53, 54, 61} and r["options"][53] == bytes([DHCPNAK])


def test_reply_on_vlan_and_parses_back() -> None:
    frame = reply(parse_dhcp(udhcpc_discover(vlan=99)))
    assert struct.unpack("!HHH", frame[12:18]) == (0x8100, 99, 0x0800)
    back = parse_dhcp(frame)
    assert back.op == 2 and back.message_type == DHCPOFFER and back.server_id == IP("10.0.0.1")
    unpack_reply(frame[:12] + frame[16:])


def test_bad_arguments() -> None:
    req = parse_dhcp(udhcpc_discover())
    with pytest.raises(PacketError):
        reply(req, DHCPREQUEST)
    with pytest.raises(PacketError):
        reply(req, lease_seconds=-1)
    with pytest.raises(PacketError):
        reply(req, yiaddr="not-an-ip")
    offer = parse_dhcp(reply(req))
    with pytest.raises(PacketError):
        reply(offer)  # cannot answer a BOOTREPLY


def _scapy_udp_checksum_ok(frame: bytes) -> bool:
    """scapy's judgement: the UDP checksum it computes for the datagram equals the one carried."""
    scapy = pytest.importorskip("scapy.all")
    pkt = scapy.Ether(frame)
    carried = pkt[scapy.UDP].chksum
    del pkt[scapy.UDP].chksum
    return scapy.Ether(bytes(pkt))[scapy.UDP].chksum == carried


def test_readdress_finishes_a_partial_checksum() -> None:
    """A server with TX offload hands the tap a reply whose UDP checksum holds only the pseudo-header
    sum; re-addressed as it is, no receiver takes it (udhcpc -B: 'bad udp cksum')."""
    frame = bytearray(udhcpc_discover(flags=0x8000))
    frame[14 + 20 + 6:14 + 20 + 8] = b"\x12\x34"  # what CHECKSUM_PARTIAL leaves: not the full sum
    assert not _scapy_udp_checksum_ok(bytes(frame))
    out = readdress(bytes(frame), "02:AA:BB:CC:DD:EE")
    assert out[:6] == mac("02:aa:bb:cc:dd:ee") and out[6:40] == frame[6:40] and out[42:] == frame[42:]
    assert _scapy_udp_checksum_ok(out)
    tagged = readdress(udhcpc_discover(vlan=7), CLIENT)
    assert tagged[12:16] == b"\x81\x00\x00\x07" and _scapy_udp_checksum_ok(tagged)


def test_inform_ack_has_no_lease_and_goes_to_ciaddr() -> None:
    """RFC 2131 §4.3.5, judged by scapy's decoder."""
    scapy = pytest.importorskip("scapy.all")
    inform = bytes(scapy.Ether(src=CLIENT, dst="ff:ff:ff:ff:ff:ff") / scapy.IP(src="10.0.0.7", dst="255.255.255.255")
                   / scapy.UDP(sport=68, dport=67) / scapy.BOOTP(chaddr=mac(CLIENT), ciaddr="10.0.0.7", xid=7)
                   / scapy.DHCP(options=[("message-type", "inform"), "end"]))
    req = parse_dhcp(inform)
    out = scapy.Ether(reply(req, message_type=DHCPACK, yiaddr=IP(0), lease_seconds=None))
    opts = {o[0]: o[1] for o in out[scapy.DHCP].options if isinstance(o, tuple)}
    assert opts["message-type"] == 5 and "lease_time" not in opts and "renewal_time" not in opts
    assert out[scapy.BOOTP].yiaddr == "0.0.0.0" and out[scapy.IP].dst == "10.0.0.7" and out.dst == CLIENT.lower()
    assert opts["subnet_mask"] == "255.255.255.0"
    with pytest.raises(PacketError, match="without a lease"):
        reply(req, message_type=DHCPACK, lease_seconds=None)  # with a yiaddr
