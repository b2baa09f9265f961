"""One-line summaries of VXLAN frames seen on the underlay, for `varpd snoop`.

Pure: bytes in, a frozen :class:`VxlanSummary` out, text or a JSON-able dict from
that.  A capture tool sees whatever the wire carries, so :func:`summarize` never
raises on the bytes: what does not decode keeps every layer that did and says
why in ``malformed``.  Checksums are not verified (offloaded frames carry
partial sums); lengths are, because dpkt trusts them blindly.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from varpd.packet.dhcp import (
    DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DHCPACK, DHCPDECLINE, DHCPDISCOVER, DHCPINFORM, DHCPNAK,
    DHCPOFFER, DHCPRELEASE, DHCPREQUEST, parse_dhcp,
)
from varpd.packet.errors import PacketError
from varpd.packet.ethernet import (
    ETHER_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, parse_ethernet,
)
from varpd.packet.mac import bytes_to_mac

VXLAN_PORT = 4789
VXLAN_HEADER_LEN = 8
VXLAN_FLAG_I = 0x08  # RFC 7348: the VNI is valid
MAX_VNI = 0xFFFFFF

_IPV4_HEADER_LEN = 20
_IPV6_HEADER_LEN = 40
_UDP_HEADER_LEN = 8
_TCP_HEADER_LEN = 20
_PROTO_ICMP, _PROTO_TCP, _PROTO_UDP, _PROTO_ICMPV6 = 1, 6, 17, 58
_DHCP_PORTS = frozenset({(DHCP_CLIENT_PORT, DHCP_SERVER_PORT), (DHCP_SERVER_PORT, DHCP_CLIENT_PORT)})
_DHCP_TYPES = {DHCPDISCOVER: "DISCOVER", DHCPOFFER: "OFFER", DHCPREQUEST: "REQUEST", DHCPDECLINE: "DECLINE",
               DHCPACK: "ACK", DHCPNAK: "NAK", DHCPRELEASE: "RELEASE", DHCPINFORM: "INFORM"}
_ICMP4 = {0: "echo reply", 3: "unreachable", 5: "redirect", 8: "echo request", 11: "time exceeded"}
_ICMP6 = {1: "unreachable", 2: "packet too big", 3: "time exceeded", 128: "echo request", 129: "echo reply",
          133: "router solicitation", 134: "router advertisement", 135: "neighbor solicitation",
          136: "neighbor advertisement", 137: "redirect"}
_TCP_FLAGS = ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x10, "."), (0x20, "U"))


@dataclass(frozen=True, slots=True)
class VxlanSummary:
    """What one underlay frame carried; fields of layers that did not decode are None."""

    timestamp: float
    outer_src: str | None = None
    outer_sport: int | None = None
    outer_dst: str | None = None
    outer_dport: int | None = None
    vni: int | None = None
    src_mac: str | None = None
    dst_mac: str | None = None
    vlan: int | None = None
    network: str | None = None  # "IPv4", "IPv6", "ARP", "ethertype 0x88cc", "802.3"
    src_ip: str | None = None
    dst_ip: str | None = None
    protocol: str | None = None  # "ICMP", "ICMPv6", "TCP", "UDP", "DHCP", "proto 47"
    info: str = ""
    malformed: str | None = None


class _Partial(PacketError):
    """Decoding stopped: carries the reason; the fields decoded so far are kept by the caller."""


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise _Partial(f"truncated {what}: {len(data)} of {size} bytes")


def summarize(frame: bytes, *, port: int = VXLAN_PORT, timestamp: float = 0.0) -> VxlanSummary | None:
    """Summary of an underlay Ethernet frame, or None when it is clearly not UDP to/from ``port``.

    Frames that cannot be decoded far enough to tell, or that are on ``port`` but do
    not decode, are returned with ``malformed`` set.
    """
    fields: dict[str, Any] = {"timestamp": timestamp}
    try:
        payload = _outer(bytes(frame), port, fields)
        if payload is None:
            return None
        inner = _vxlan(payload, fields)
        _inner(inner, fields)
    except PacketError as exc:
        fields["malformed"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must still be one line, not a traceback
        fields["malformed"] = f"undecodable: {type(exc).__name__}: {exc}"
    return VxlanSummary(**fields)


def _outer(frame: bytes, port: int, fields: dict[str, Any]) -> bytes | None:
    """The UDP payload of an outer frame on ``port``; None for other traffic."""
    if len(frame) < ETHER_HEADER_LEN:
        raise _Partial(f"frame of {len(frame)} bytes is shorter than an Ethernet header")
    eth = parse_ethernet(frame)
    if eth is None or eth.ethertype not in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
        return None
    decode = _ipv4 if eth.ethertype == ETHERTYPE_IPV4 else _ipv6
    ip = decode(eth.payload, len(frame), fields, outer=True)
    if ip is None:
        return None
    fragment, body = ip
    if fragment:
        raise _Partial(f"outer {fragment}")
    _need(body, _UDP_HEADER_LEN, "outer UDP header")
    sport, dport, ulen = struct.unpack_from("!HHH", body)
    fields.update(outer_sport=sport, outer_dport=dport)
    if port not in (sport, dport):
        return None
    if not _UDP_HEADER_LEN <= ulen <= len(body):
        raise _Partial(f"outer UDP length {ulen} invalid for {len(body)} bytes")
    return body[_UDP_HEADER_LEN:ulen]


def _check_tail(extra: int, frame_len: int, what: str, fields: dict[str, Any]) -> None:
    """Bytes after the IP packet are Ethernet padding only in a minimum-size frame (60 bytes,
    64 with a VLAN tag); more is noted in ``malformed`` but decoding goes on."""
    if extra > 0 and frame_len > 64 and fields.get("malformed") is None:
        fields["malformed"] = f"oversized: {extra} bytes beyond the {what} length"


def _ipv4(packet: bytes, frame_len: int, fields: dict[str, Any], *,
          outer: bool = False) -> tuple[str | None, bytes] | None:
    """(fragment description or None, payload) of an IPv4 packet, recording its addresses
    and (inner) protocol in fields; None for an outer packet that is not UDP."""
    what = "outer IPv4" if outer else "IPv4"
    _need(packet, _IPV4_HEADER_LEN, f"{what} header")
    vhl, _, total, _, frag, _, proto = struct.unpack_from("!BBHHHBB", packet)
    if vhl >> 4 != 4:
        raise _Partial(f"{what} header has IP version {vhl >> 4}")
    src, dst = str(ipaddress.IPv4Address(packet[12:16])), str(ipaddress.IPv4Address(packet[16:20]))
    if outer:
        if proto != _PROTO_UDP:
            return None
        fields.update(outer_src=src, outer_dst=dst)
    else:
        fields.update(src_ip=src, dst_ip=dst, protocol=_proto_name(proto))
    header_len = (vhl & 0x0F) * 4
    if header_len < _IPV4_HEADER_LEN:
        raise _Partial(f"{what} header length {header_len} is below 20")
    if not header_len <= total <= len(packet):
        raise _Partial(f"{what} total length {total} invalid for {len(packet)} bytes (truncated?)")
    _check_tail(len(packet) - total, frame_len, f"{what} total", fields)
    offset = (frag & 0x1FFF) * 8
    fragment = f"IPv4 fragment at offset {offset}" if offset else None
    return fragment, packet[header_len:total]


def _ipv6(packet: bytes, frame_len: int, fields: dict[str, Any], *,
          outer: bool = False) -> tuple[str | None, bytes] | None:
    """As _ipv4 for IPv6; extension headers are not walked (their next header is reported)."""
    what = "outer IPv6" if outer else "IPv6"
    _need(packet, _IPV6_HEADER_LEN, f"{what} header")
    vtf, plen, nxt = struct.unpack_from("!IHB", packet)
    if vtf >> 28 != 6:
        raise _Partial(f"{what} header has IP version {vtf >> 28}")
    src, dst = str(ipaddress.IPv6Address(packet[8:24])), str(ipaddress.IPv6Address(packet[24:40]))
    if outer:
        if nxt != _PROTO_UDP:
            return None
        fields.update(outer_src=src, outer_dst=dst)
    else:
        fields.update(src_ip=src, dst_ip=dst, protocol=_proto_name(nxt))
    if _IPV6_HEADER_LEN + plen > len(packet):
        raise _Partial(f"{what} payload length {plen} invalid for {len(packet) - _IPV6_HEADER_LEN} bytes "
                       "(truncated?)")
    _check_tail(len(packet) - _IPV6_HEADER_LEN - plen, frame_len, f"{what} payload", fields)
    return None, packet[_IPV6_HEADER_LEN:_IPV6_HEADER_LEN + plen]


def _vxlan(payload: bytes, fields: dict[str, Any]) -> bytes:
    _need(payload, VXLAN_HEADER_LEN, "VXLAN header")
    flags, vni_word = struct.unpack_from("!B3xI", payload)
    if not flags & VXLAN_FLAG_I:
        raise _Partial(f"VXLAN flags {flags:#04x} without the I (VNI valid) flag")
    fields["vni"] = vni_word >> 8
    return payload[VXLAN_HEADER_LEN:]


def _inner(frame: bytes, fields: dict[str, Any]) -> None:
    if len(frame) < ETHER_HEADER_LEN:
        raise _Partial(f"inner frame of {len(frame)} bytes is shorter than an Ethernet header")
    fields.update(dst_mac=bytes_to_mac(frame[0:6]), src_mac=bytes_to_mac(frame[6:12]))
    eth = parse_ethernet(frame)
    if eth is None:
        (ethertype,) = struct.unpack_from("!H", frame, 12)
        fields["network"] = f"802.3 length {ethertype}" if ethertype <= 1500 else f"ethertype {ethertype:#06x}"
        return
    fields["vlan"] = eth.vlan
    if eth.ethertype == ETHERTYPE_ARP:
        fields["network"] = "ARP"
        fields["info"] = _arp(eth.payload)
    elif eth.ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
        v4 = eth.ethertype == ETHERTYPE_IPV4
        fields["network"] = "IPv4" if v4 else "IPv6"
        ip = (_ipv4 if v4 else _ipv6)(eth.payload, len(frame), fields)
        assert ip is not None  # only outer packets are ever skipped
        fragment, body = ip
        if fragment:
            fields["info"] = fragment
        else:
            _transport(body, frame, fields)
    else:
        fields["network"] = f"ethertype {eth.ethertype:#06x}"


def _arp(body: bytes) -> str:
    _need(body, 8, "ARP header")
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", body)
    if (htype, ptype, hlen, plen) != (1, ETHERTYPE_IPV4, 6, 4):
        return f"hardware {htype} protocol {ptype:#06x} op {op}"
    _need(body, 28, "ARP message")
    sha, spa = bytes_to_mac(body[8:14]), ipaddress.IPv4Address(body[14:18])
    tpa = ipaddress.IPv4Address(body[24:28])
    if op == 1:
        return f"who-has {tpa} tell {spa}"
    if op == 2:
        return f"{spa} is-at {sha}"
    return f"op {op} {spa} > {tpa}"


def _proto_name(proto: int) -> str:
    return {_PROTO_ICMP: "ICMP", _PROTO_TCP: "TCP", _PROTO_UDP: "UDP", _PROTO_ICMPV6: "ICMPv6"}.get(
        proto, f"proto {proto}")


def _transport(body: bytes, frame: bytes, fields: dict[str, Any]) -> None:
    proto = fields["protocol"]
    if proto == "ICMP":
        fields["info"] = _icmp(body, _ICMP4, "ICMP")
    elif proto == "ICMPv6":
        fields["info"] = _icmp6(body)
    elif proto == "TCP":
        fields["info"] = _tcp(body)
    elif proto == "UDP":
        _need(body, _UDP_HEADER_LEN, "UDP header")
        sport, dport, ulen = struct.unpack_from("!HHH", body)
        if not _UDP_HEADER_LEN <= ulen <= len(body):
            raise _Partial(f"UDP length {ulen} invalid for {len(body)} bytes")
        if fields["network"] == "IPv4" and (sport, dport) in _DHCP_PORTS:
            fields["protocol"] = "DHCP"
            fields["info"] = _dhcp(frame)
        else:
            fields["info"] = f"{sport} > {dport} len {ulen - _UDP_HEADER_LEN}"


def _icmp(body: bytes, names: dict[int, str], what: str) -> str:
    _need(body, 4, f"{what} header")
    kind, code = body[0], body[1]
    name = names.get(kind, f"type {kind}")
    if kind in (0, 8, 128, 129):
        _need(body, 8, f"{what} echo")
        ident, seq = struct.unpack_from("!HH", body, 4)
        return f"{name} id {ident} seq {seq}"
    return f"{name} code {code}" if code or kind not in names else name


def _icmp6(body: bytes) -> str:
    _need(body, 4, "ICMPv6 header")
    kind = body[0]
    if kind not in (135, 136):
        return _icmp(body, _ICMP6, "ICMPv6")
    _need(body, 24, f"ICMPv6 {_ICMP6[kind]}")
    target = ipaddress.IPv6Address(body[8:24])
    lladdr = _ndp_lladdr(body[24:], 1 if kind == 135 else 2)
    if kind == 135:
        return f"{_ICMP6[kind]} who-has {target}" + (f" from {lladdr}" if lladdr else "")
    return f"{_ICMP6[kind]} {target}" + (f" is-at {lladdr}" if lladdr else "")


def _ndp_lladdr(options: bytes, wanted: int) -> str | None:
    """The source (1) or target (2) link-layer address option, if present and well-formed."""
    offset = 0
    while offset + 2 <= len(options):
        kind, units = options[offset], options[offset + 1]
        if units == 0:
            raise _Partial("NDP option of length 0")
        if offset + units * 8 > len(options):
            raise _Partial(f"truncated NDP option {kind}")
        if kind == wanted and units == 1:
            return bytes_to_mac(options[offset + 2:offset + 8])
        offset += units * 8
    return None


def _tcp(body: bytes) -> str:
    _need(body, _TCP_HEADER_LEN, "TCP header")
    sport, dport, seq, ack, off_flags = struct.unpack_from("!HHIIH", body)
    header_len = (off_flags >> 12) * 4
    if not _TCP_HEADER_LEN <= header_len <= len(body):
        raise _Partial(f"TCP header length {header_len} invalid for {len(body)} bytes")
    flags = "".join(c for bit, c in _TCP_FLAGS if off_flags & bit) or "none"
    text = f"{sport} > {dport} [{flags}] seq {seq}"
    if off_flags & 0x10:
        text += f" ack {ack}"
    return f"{text} len {len(body) - header_len}"


def _dhcp(frame: bytes) -> str:
    msg = parse_dhcp(frame)  # the daemon's own strict parser: it raises PacketError on bad input
    if msg is None:  # not reachable for 67/68 over IPv4, but keep the type checker honest
        return "not DHCP"
    mtype = _DHCP_TYPES.get(msg.message_type, f"type {msg.message_type}") if msg.message_type else "BOOTP"
    text = f"{mtype} xid {msg.xid:#010x} chaddr {msg.chaddr}"
    if int(msg.yiaddr):
        text += f" yiaddr {msg.yiaddr}"
    if msg.requested_ip is not None:
        text += f" requested {msg.requested_ip}"
    return text


# -- rendering ------------------------------------------------------------------------------------

def _endpoint(ip: str | None, port: int | None) -> str:
    host = "?" if ip is None else f"[{ip}]" if ":" in ip else ip
    return host if port is None else f"{host}:{port}"


def format_time(timestamp: float) -> str:
    """Local wall-clock time of day with microseconds, as tcpdump prints it."""
    return datetime.fromtimestamp(timestamp).strftime("%H:%M:%S.%f")


def format_summary(s: VxlanSummary) -> str:
    """One line: time, outer endpoints, VNI, inner MACs, VLAN, network and transport summary."""
    parts = [format_time(s.timestamp)]
    if s.outer_src is not None:
        parts.append(f"{_endpoint(s.outer_src, s.outer_sport)} > {_endpoint(s.outer_dst, s.outer_dport)}")
    if s.vni is not None:
        parts.append(f"vni {s.vni}")
    if s.src_mac is not None:
        parts.append(f"{s.src_mac} > {s.dst_mac}")
    if s.vlan is not None:
        parts.append(f"vlan {s.vlan}")
    if s.network is not None:
        parts.append(s.network)
    if s.src_ip is not None:
        parts.append(f"{s.src_ip} > {s.dst_ip}")
    if s.protocol is not None:
        parts.append(s.protocol)
    if s.info:
        parts.append(s.info)
    if s.malformed is not None:
        parts.append(f"malformed: {s.malformed}")
    return " ".join(parts)


def summary_to_dict(s: VxlanSummary) -> dict[str, Any]:
    """Every field (None as null) plus the rendered line, for one JSON object per frame."""
    out = dataclasses.asdict(s)
    out["text"] = format_summary(s)
    return out
