"""DHCP frames (RFC 2131/2132): recognise them, proxy them, or answer as a native server.

dpkt decodes the BOOTP fixed header, but its option walker silently truncates a
short final option, so options are walked strictly here.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import dpkt

from varpd.packet.errors import PacketError
from varpd.packet.ethernet import ETHERTYPE_IPV4, build_ethernet, decoding, parse_ethernet
from varpd.packet.ipv4 import build_udp4, finish_udp4_checksum, parse_udp4, udp4_checksum_ok
from varpd.packet.mac import BROADCAST_MAC, bytes_to_mac, mac_to_bytes

BOOTREQUEST = 1
BOOTREPLY = 2

DHCPDISCOVER = 1
DHCPOFFER = 2
DHCPREQUEST = 3
DHCPDECLINE = 4
DHCPACK = 5
DHCPNAK = 6
DHCPRELEASE = 7
DHCPINFORM = 8

DHCP_SERVER_PORT = 67
DHCP_CLIENT_PORT = 68
BROADCAST_FLAG = 0x8000
DHCP_MAGIC = 0x63825363

_HTYPE_ETHER = 1
_FIXED_LEN = 240  # BOOTP header (236) + magic cookie
_MIN_BOOTP_LEN = 300  # RFC 1542 §2.1: some clients drop shorter replies
_PORTS = frozenset({(DHCP_CLIENT_PORT, DHCP_SERVER_PORT), (DHCP_SERVER_PORT, DHCP_CLIENT_PORT)})
_ZERO = ipaddress.IPv4Address(0)
_BROADCAST_IP = ipaddress.IPv4Address("255.255.255.255")


class DhcpOption(IntEnum):
    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS = 6
    HOSTNAME = 12
    REQUESTED_IP = 50
    LEASE_TIME = 51
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAM_LIST = 55
    MAX_MESSAGE_SIZE = 57
    RENEWAL_T1 = 58
    REBINDING_T2 = 59
    CLIENT_ID = 61
    END = 255


@dataclass(frozen=True, slots=True)
class DhcpFrame:
    """A decoded DHCP frame; raw keeps the original bytes for byte-identical proxying."""

    src_mac: str
    dst_mac: str
    src_ip: ipaddress.IPv4Address
    dst_ip: ipaddress.IPv4Address
    src_port: int
    dst_port: int
    op: int
    xid: int
    flags: int
    ciaddr: ipaddress.IPv4Address
    yiaddr: ipaddress.IPv4Address
    chaddr: str
    message_type: int | None
    requested_ip: ipaddress.IPv4Address | None
    server_id: ipaddress.IPv4Address | None
    options: tuple[tuple[int, bytes], ...]
    vlan: int | None
    raw: bytes

    def option(self, code: int) -> bytes | None:
        """First value of option code, if present."""
        return next((value for c, value in self.options if c == code), None)


def _parse_options(raw: bytes) -> tuple[tuple[int, bytes], ...]:
    options: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(raw):
        code = raw[offset]
        if code == DhcpOption.END:
            break
        if code == DhcpOption.PAD:
            offset += 1
            continue
        if offset + 2 > len(raw) or offset + 2 + raw[offset + 1] > len(raw):
            raise PacketError(f"truncated DHCP option {code}")
        size = raw[offset + 1]
        options.append((code, raw[offset + 2:offset + 2 + size]))
        offset += 2 + size
    return tuple(options)


def _fixed_option(options: tuple[tuple[int, bytes], ...], code: DhcpOption, size: int) -> bytes | None:
    value = next((v for c, v in options if c == code), None)
    if value is not None and len(value) != size:
        raise PacketError(f"DHCP option {code.name} has {len(value)} bytes, expected {size}")
    return value


def parse_dhcp(frame: bytes) -> DhcpFrame | None:
    """The DHCP message in frame, or None unless it is Ethernet/IPv4/UDP 68->67 or 67->68."""
    eth = parse_ethernet(frame)
    if eth is None or eth.ethertype != ETHERTYPE_IPV4:
        return None
    udp = parse_udp4(eth.payload, _PORTS)
    if udp is None:
        return None
    if len(frame) > eth.max_frame_len:
        raise PacketError(
            f"frame of {len(frame)} bytes exceeds the {eth.max_frame_len}-byte Ethernet maximum")
    if len(udp.payload) < _FIXED_LEN:
        raise PacketError(f"truncated DHCP message: {len(udp.payload)} bytes")
    with decoding("DHCP header"):
        msg = dpkt.dhcp.DHCP(udp.payload[:_FIXED_LEN])
    if msg.magic != DHCP_MAGIC:
        raise PacketError(f"bad DHCP magic cookie {msg.magic:#010x}")
    if msg.op not in (BOOTREQUEST, BOOTREPLY):
        raise PacketError(f"bad BOOTP op {msg.op}")
    if msg.hrd != _HTYPE_ETHER or msg.hln != 6:
        raise PacketError(f"unsupported DHCP hardware type {msg.hrd}/length {msg.hln}")
    options = _parse_options(udp.payload[_FIXED_LEN:])
    mtype = _fixed_option(options, DhcpOption.MESSAGE_TYPE, 1)
    requested = _fixed_option(options, DhcpOption.REQUESTED_IP, 4)
    server_id = _fixed_option(options, DhcpOption.SERVER_ID, 4)
    return DhcpFrame(
        src_mac=eth.src_mac, dst_mac=eth.dst_mac, src_ip=udp.src_ip, dst_ip=udp.dst_ip,
        src_port=udp.src_port, dst_port=udp.dst_port, op=msg.op, xid=msg.xid, flags=msg.flags,
        ciaddr=ipaddress.IPv4Address(msg.ciaddr), yiaddr=ipaddress.IPv4Address(msg.yiaddr),
        chaddr=bytes_to_mac(msg.chaddr[:6]),
        message_type=mtype[0] if mtype is not None else None,
        requested_ip=ipaddress.IPv4Address(requested) if requested is not None else None,
        server_id=ipaddress.IPv4Address(server_id) if server_id is not None else None,
        options=options, vlan=eth.vlan, raw=bytes(frame))


def readdress(frame: bytes, new_dst_mac: str) -> bytes:
    """Point a DHCP frame at another MAC (the illumos DHCP proxy), its UDP checksum finished: a
    sender with TX offload left it partial, and the frame now goes where nothing completes it."""
    new_dst = mac_to_bytes(new_dst_mac)
    eth = parse_ethernet(frame)
    if eth is None or eth.ethertype != ETHERTYPE_IPV4:
        raise PacketError("only an Ethernet/IPv4 frame can be re-addressed")
    header_len = len(frame) - len(eth.payload)
    return new_dst + bytes(frame[6:header_len]) + finish_udp4_checksum(eth.payload)


def checksum_ok(frame: bytes) -> bool:
    """The UDP checksum of a (complete, not offloaded) DHCP frame is right or absent."""
    eth = parse_ethernet(frame)
    if eth is None or eth.ethertype != ETHERTYPE_IPV4:
        raise PacketError("not an Ethernet/IPv4 frame")
    return udp4_checksum_ok(eth.payload)


def _ip4(value: object, name: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)  # type: ignore[arg-type]
    except ValueError as exc:
        raise PacketError(f"invalid {name} {value!r}") from exc


def _encode_options(options: Sequence[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for code, value in options:
        if len(value) > 255:
            raise PacketError(f"DHCP option {code} too long ({len(value)} bytes)")
        out += bytes((code, len(value))) + value
    out.append(DhcpOption.END)
    return bytes(out)


def build_dhcp_reply(request: DhcpFrame, *, message_type: int, server_mac: str,
                     server_ip: ipaddress.IPv4Address, yiaddr: ipaddress.IPv4Address,
                     subnet_mask: ipaddress.IPv4Address, router: ipaddress.IPv4Address | None = None,
                     dns: Sequence[ipaddress.IPv4Address] = (), lease_seconds: int | None,
                     broadcast: bool | None = None) -> bytes:
    """An OFFER, ACK or NAK from varpd acting as the DHCP server (RFC 2131 table 3).

    lease_seconds=None is the ACK to a DHCPINFORM (§4.3.5): no lease time, and yiaddr
    must be 0.0.0.0; it goes to the ciaddr the client has.

    Destination (§4.1): NAK, or a request with the broadcast flag, or broadcast=True
    for a client without an address goes to 255.255.255.255/ff:ff:ff:ff:ff:ff;
    otherwise unicast to ciaddr (renewals) or yiaddr, at chaddr.
    NAK carries only options 53/54 (plus the echoed client id) and no address.
    """
    if message_type not in (DHCPOFFER, DHCPACK, DHCPNAK):
        raise PacketError(f"cannot build DHCP message type {message_type}")
    if request.op != BOOTREQUEST:
        raise PacketError("can only reply to a BOOTREQUEST")
    if lease_seconds is not None and (not isinstance(lease_seconds, int) or not 0 <= lease_seconds <= 0xFFFFFFFF):
        raise PacketError(f"invalid lease time {lease_seconds!r}")
    if lease_seconds is None and (message_type != DHCPACK or _ip4(yiaddr, "yiaddr") != _ZERO):
        raise PacketError("only an ACK to DHCPINFORM (yiaddr 0.0.0.0) goes without a lease time")
    server_ip = _ip4(server_ip, "server_ip")
    nak = message_type == DHCPNAK
    yiaddr = _ZERO if nak else _ip4(yiaddr, "yiaddr")
    ciaddr = request.ciaddr if message_type == DHCPACK else _ZERO

    options: list[tuple[int, bytes]] = [
        (DhcpOption.MESSAGE_TYPE, bytes((message_type,))),
        (DhcpOption.SERVER_ID, server_ip.packed),
    ]
    if not nak:
        if lease_seconds is not None:
            options += [
                (DhcpOption.LEASE_TIME, struct.pack(">I", lease_seconds)),
                (DhcpOption.RENEWAL_T1, struct.pack(">I", lease_seconds // 2)),
                (DhcpOption.REBINDING_T2, struct.pack(">I", lease_seconds * 7 // 8)),
            ]
        options.append((DhcpOption.SUBNET_MASK, _ip4(subnet_mask, "subnet_mask").packed))
        if router is not None:
            options.append((DhcpOption.ROUTER, _ip4(router, "router").packed))
        if dns:
            options.append((DhcpOption.DNS, b"".join(_ip4(d, "dns").packed for d in dns)))
    client_id = request.option(DhcpOption.CLIENT_ID)
    if client_id is not None:  # RFC 6842: servers echo the client identifier
        options.append((DhcpOption.CLIENT_ID, client_id))

    body = bytes(dpkt.dhcp.DHCP(
        op=BOOTREPLY, hrd=_HTYPE_ETHER, hln=6, hops=0, xid=request.xid, secs=0,
        flags=request.flags, ciaddr=int(ciaddr), yiaddr=int(yiaddr), siaddr=0, giaddr=0,
        chaddr=mac_to_bytes(request.chaddr) + bytes(10), magic=DHCP_MAGIC, opts=(), data=b""))
    body += _encode_options(options)
    body = body.ljust(_MIN_BOOTP_LEN, b"\x00")

    if nak or request.flags & BROADCAST_FLAG or (request.ciaddr == _ZERO and broadcast is True):
        dst_ip, dst_mac = _BROADCAST_IP, BROADCAST_MAC
    else:
        dst_ip = request.ciaddr if request.ciaddr != _ZERO else yiaddr
        dst_mac = request.chaddr
    packet = build_udp4(server_ip, dst_ip, DHCP_SERVER_PORT, DHCP_CLIENT_PORT, body)
    return build_ethernet(dst_mac, server_mac, ETHERTYPE_IPV4, packet, request.vlan)
