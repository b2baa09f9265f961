"""One-line summaries of VXLAN frames seen on the underlay, for `varpd snoop`.

Pure: bytes in, a frozen :class:`VxlanSummary` out, text or a JSON-able dict from
that.  A capture tool sees whatever the wire carries, so :func:`summarize` never
raises on the bytes: what does not decode keeps every layer that did and says
why in ``malformed``.  Bytes that are missing for a known reason - a snap length
(``wire_len`` beyond the captured bytes) or an IP fragment whose rest travels in
later fragments - are not malformed: decoding goes as far as the bytes go and the
summary says ``truncated``.  Checksums are not verified (offloaded frames carry
partial sums); lengths are, because they are what a hostile frame lies about.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from varpd.packet.dhcp import (
    DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DHCPACK, DHCPDECLINE, DHCPDISCOVER, DHCPINFORM, DHCPNAK,
    DHCPOFFER, DHCPRELEASE, DHCPREQUEST, parse_dhcp,
)
from varpd.packet.errors import PacketError
from varpd.packet.ethernet import ETHER_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6
from varpd.packet.mac import bytes_to_mac

VXLAN_PORT = 4789
VXLAN_HEADER_LEN = 8
VXLAN_FLAG_I = 0x08  # RFC 7348: the VNI is valid
MAX_VNI = 0xFFFFFF

_VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})  # 802.1Q, 802.1ad (QinQ) and the pre-standard QinQ
_IPV4_HEADER_LEN = 20
_IPV6_HEADER_LEN = 40
_UDP_HEADER_LEN = 8
_TCP_HEADER_LEN = 20
_PROTO_ICMP, _PROTO_TCP, _PROTO_UDP, _PROTO_ICMPV6 = 1, 6, 17, 58
_IPV6_FRAGMENT, _IPV6_AH = 44, 51
_IPV6_EXTENSIONS = {0: "hop-by-hop", 43: "routing", _IPV6_FRAGMENT: "fragment", _IPV6_AH: "AH",
                    60: "destination options", 135: "mobility", 139: "HIP", 140: "shim6"}
_IPV4_MF, _IPV4_OFFSET = 0x2000, 0x1FFF
_DHCP_PORTS = frozenset({(DHCP_CLIENT_PORT, DHCP_SERVER_PORT), (DHCP_SERVER_PORT, DHCP_CLIENT_PORT)})
_DHCP_TYPES = {DHCPDISCOVER: "DISCOVER", DHCPOFFER: "OFFER", DHCPREQUEST: "REQUEST", DHCPDECLINE: "DECLINE",
               DHCPACK: "ACK", DHCPNAK: "NAK", DHCPRELEASE: "RELEASE", DHCPINFORM: "INFORM"}
_ICMP4 = {0: "echo reply", 3: "unreachable", 5: "redirect", 8: "echo request", 11: "time exceeded"}
_ICMP6 = {1: "unreachable", 2: "packet too big", 3: "time exceeded", 128: "echo request", 129: "echo reply",
          133: "router solicitation", 134: "router advertisement", 135: "neighbor solicitation",
          136: "neighbor advertisement", 137: "redirect"}
_ECHO4, _ECHO6 = frozenset({0, 8}), frozenset({128, 129})
_TCP_FLAGS = ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x10, "."), (0x20, "U"))


@dataclass(frozen=True, slots=True)
class VxlanSummary:
    """What one underlay frame carried; fields of layers that did not decode are None.

    ``vlan`` is the first inner 802.1Q tag and ``vlans`` every inner tag (QinQ and deeper);
    ``outer_vlans`` the underlay's tags. ``fragment`` describes an outer IP fragment;
    ``truncated`` says which bytes were not there to decode (snap length, later fragments);
    ``extensions`` lists the inner IPv6 extension headers walked to reach ``protocol``."""

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
    truncated: str | None = None
    fragment: str | None = None
    outer_vlans: tuple[int, ...] = ()
    vlans: tuple[int, ...] = ()
    extensions: tuple[str, ...] = ()


class OuterFragments:
    """The outer IP fragments of VXLAN datagrams seen so far (bounded), so that a later fragment -
    which carries no UDP header - is shown when its first fragment was VXLAN, and skipped when it
    belongs to some other UDP flow. The one piece of state across frames; the caller owns it."""

    def __init__(self, limit: int = 4096) -> None:
        self._seen: OrderedDict[tuple, None] = OrderedDict()
        self._limit = limit

    def add(self, key: tuple) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self._limit:
            self._seen.popitem(last=False)

    def __contains__(self, key: tuple) -> bool:
        return key in self._seen


class _Partial(PacketError):
    """Decoding stopped: carries the reason; the fields decoded so far are kept by the caller."""


class _Short(_Partial):
    """Decoding stopped where the captured bytes (or this fragment) end: truncated, not malformed."""


class _NotOurs(Exception):
    """The frame is not UDP to or from the VXLAN port."""


class _Decoder:
    """One frame's decode. ``cut`` is how many bytes of the current layer were not captured (snap
    length); ``fragmented`` says the layer goes on in later IP fragments. A layer that runs out of
    bytes for either reason is truncated, not malformed."""

    def __init__(self, port: int, fragments: OuterFragments | None, cut: int) -> None:
        self.port = port
        self.fragments = fragments
        self.cut = cut
        self.fragmented = False
        self.f: dict[str, Any] = {}

    def need(self, data: bytes, size: int, what: str) -> None:
        if len(data) < size:
            if self.cut or self.fragmented:
                raise _Short(f"{what} cut after {len(data)} of {size} bytes")
            raise _Partial(f"truncated {what}: {len(data)} of {size} bytes")

    def fits(self, declared: int, have: int, what: str, detail: str) -> None:
        """A length field may exceed the bytes at hand by the bytes known to be cut (any amount
        in a fragment: the length covers the later fragments too)."""
        if declared > have + self.cut and not self.fragmented:
            raise _Partial(f"{what} {declared} invalid for {have} bytes{detail}")

    # -- link layer ---------------------------------------------------------------------------

    def ethernet(self, frame: bytes, what: str) -> tuple[int, tuple[int, ...], bytes]:
        """(ethertype, VLAN ids, payload) of an Ethernet II frame with any number of tags."""
        self.need(frame, ETHER_HEADER_LEN, f"{what} Ethernet header")
        (ethertype,) = struct.unpack_from("!H", frame, 12)
        offset, tags = ETHER_HEADER_LEN, []
        while ethertype in _VLAN_TPIDS:
            self.need(frame[offset:], 4, f"{what} VLAN tag")
            tci, ethertype = struct.unpack_from("!HH", frame, offset)
            tags.append(tci & 0x0FFF)
            offset += 4
        return ethertype, tuple(tags), frame[offset:]

    # -- network layer ------------------------------------------------------------------------

    def ipv4(self, packet: bytes, frame_len: int, outer: bool) -> tuple[int, int, int, bool, bytes]:
        """(protocol, fragment offset, id, more fragments, payload); records addresses in f."""
        what = "outer IPv4" if outer else "IPv4"
        self.need(packet, _IPV4_HEADER_LEN, f"{what} header")
        vhl, _, total, ident, frag, _, proto = struct.unpack_from("!BBHHHBB", packet)
        if vhl >> 4 != 4:
            raise _Partial(f"{what} header has IP version {vhl >> 4}")
        src, dst = str(ipaddress.IPv4Address(packet[12:16])), str(ipaddress.IPv4Address(packet[16:20]))
        if outer:
            if proto != _PROTO_UDP:
                raise _NotOurs
            self.f.update(outer_src=src, outer_dst=dst)
        else:
            self.f.update(src_ip=src, dst_ip=dst, protocol=_proto_name(proto))
        header_len = (vhl & 0x0F) * 4
        if header_len < _IPV4_HEADER_LEN:
            raise _Partial(f"{what} header length {header_len} is below 20")
        self.need(packet, header_len, f"{what} options")
        if total < header_len:
            raise _Partial(f"{what} total length {total} is below its header length {header_len}")
        self.fits(total, len(packet), f"{what} total length", " (truncated?)")
        self._tail(len(packet) - total, frame_len, f"{what} total")
        self.cut = max(0, total - len(packet))
        return proto, (frag & _IPV4_OFFSET) * 8, ident, bool(frag & _IPV4_MF), packet[header_len:total]

    def ipv6(self, packet: bytes, frame_len: int, outer: bool) -> tuple[int, int, int, bool, bytes]:
        """As ipv4 for IPv6, walking the extension headers (named in f["extensions"] for inner)."""
        what = "outer IPv6" if outer else "IPv6"
        self.need(packet, _IPV6_HEADER_LEN, f"{what} header")
        vtf, plen, nxt = struct.unpack_from("!IHB", packet)
        if vtf >> 28 != 6:
            raise _Partial(f"{what} header has IP version {vtf >> 28}")
        src, dst = str(ipaddress.IPv6Address(packet[8:24])), str(ipaddress.IPv6Address(packet[24:40]))
        if not outer:
            self.f.update(src_ip=src, dst_ip=dst)
        self.fits(plen, len(packet) - _IPV6_HEADER_LEN, f"{what} payload length", " (truncated?)")
        self._tail(len(packet) - _IPV6_HEADER_LEN - plen, frame_len, f"{what} payload")
        self.cut = max(0, _IPV6_HEADER_LEN + plen - len(packet))
        body = packet[_IPV6_HEADER_LEN:_IPV6_HEADER_LEN + plen]
        offset, ident, more, names = 0, 0, False, []
        while nxt in _IPV6_EXTENSIONS:
            names.append(_IPV6_EXTENSIONS[nxt])
            self.need(body, 8 if nxt == _IPV6_FRAGMENT else 2, f"{what} {_IPV6_EXTENSIONS[nxt]} header")
            if nxt == _IPV6_FRAGMENT:
                size = 8
                off_m, ident = struct.unpack_from("!HI", body, 2)
                offset, more = off_m & 0xFFF8, bool(off_m & 1)
            else:
                size = (body[1] + 2) * 4 if nxt == _IPV6_AH else (body[1] + 1) * 8
            self.need(body, size, f"{what} {_IPV6_EXTENSIONS[nxt]} header")
            nxt, body = body[0], body[size:]
            if offset:
                break  # a later fragment: what follows is the middle of the payload
        if outer:
            if nxt != _PROTO_UDP:
                raise _NotOurs
            self.f.update(outer_src=src, outer_dst=dst)
        else:
            self.f.update(protocol=_proto_name(nxt), extensions=tuple(names))
        return nxt, offset, ident, more, body

    def _tail(self, extra: int, frame_len: int, what: str) -> None:
        """Bytes after the IP packet are Ethernet padding only in a minimum-size frame (60 bytes,
        64 with a VLAN tag); more is noted in ``malformed`` but decoding goes on."""
        if extra > 0 and frame_len > 64 and self.f.get("malformed") is None:
            self.f["malformed"] = f"oversized: {extra} bytes beyond the {what} length"

    # -- the underlay ---------------------------------------------------------------------------

    def outer(self, frame: bytes) -> bytes | None:
        """The VXLAN payload of an underlay frame on ``port``; None for a later fragment of a VXLAN
        datagram (summarized without it); _NotOurs for other traffic."""
        if len(frame) < ETHER_HEADER_LEN and not self.cut:
            raise _Partial(f"frame of {len(frame)} bytes is shorter than an Ethernet header")
        ethertype, tags, payload = self.ethernet(frame, "outer")
        if tags:
            self.f["outer_vlans"] = tags
        if ethertype == ETHERTYPE_IPV4:
            v4 = True
        elif ethertype == ETHERTYPE_IPV6:
            v4 = False
        else:
            raise _NotOurs
        proto, offset, ident, more, body = (self.ipv4 if v4 else self.ipv6)(payload, len(frame), True)
        family = "IPv4" if v4 else "IPv6"
        key = (self.f["outer_src"], self.f["outer_dst"], ident, v4)
        if offset:
            if self.fragments is None or key not in self.fragments:
                raise _NotOurs  # its first fragment was not VXLAN, or was not seen
            self.f["fragment"] = f"outer {family} fragment id {ident:#x} offset {offset}" + (
                ", more follow" if more else ", last")
            return None
        self.need(body, _UDP_HEADER_LEN, "outer UDP header")
        sport, dport, ulen = struct.unpack_from("!HHH", body)
        if self.port not in (sport, dport):
            raise _NotOurs
        self.f.update(outer_sport=sport, outer_dport=dport)
        if more:
            self.f["fragment"] = f"outer {family} fragment id {ident:#x} offset 0, more follow"
            if self.fragments is not None:
                self.fragments.add(key)
        if ulen < _UDP_HEADER_LEN:
            raise _Partial(f"outer UDP length {ulen} invalid for {len(body)} bytes")
        self.fragmented = more
        self.fits(ulen, len(body), "outer UDP length", "")
        self.cut = 0 if more else max(0, ulen - len(body))
        return body[_UDP_HEADER_LEN:ulen]

    def vxlan(self, payload: bytes) -> bytes:
        self.need(payload, VXLAN_HEADER_LEN, "VXLAN header")
        flags, vni_word = struct.unpack_from("!B3xI", payload)
        if not flags & VXLAN_FLAG_I:
            raise _Partial(f"VXLAN flags {flags:#04x} without the I (VNI valid) flag")
        self.f["vni"] = vni_word >> 8
        return payload[VXLAN_HEADER_LEN:]

    # -- the overlay frame ----------------------------------------------------------------------

    def inner(self, frame: bytes) -> None:
        if len(frame) < ETHER_HEADER_LEN and not (self.cut or self.fragmented):
            raise _Partial(f"inner frame of {len(frame)} bytes is shorter than an Ethernet header")
        self.need(frame, 12, "inner Ethernet header")
        self.f.update(dst_mac=bytes_to_mac(frame[0:6]), src_mac=bytes_to_mac(frame[6:12]))
        ethertype, tags, payload = self.ethernet(frame, "inner")
        if tags:
            self.f.update(vlan=tags[0], vlans=tags)
        if ethertype <= 1500:
            self.f["network"] = f"802.3 length {ethertype}"
        elif ethertype == ETHERTYPE_ARP:
            self.f["network"] = "ARP"
            self.f["info"] = self.arp(payload)
        elif ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
            v4 = ethertype == ETHERTYPE_IPV4
            self.f["network"] = "IPv4" if v4 else "IPv6"
            _, offset, ident, more, body = (self.ipv4 if v4 else self.ipv6)(payload, len(frame), False)
            if offset:
                self.f["info"] = f"{self.f['network']} fragment at offset {offset}"
                return
            if more:
                self.f["info"] = f"{self.f['network']} first fragment id {ident:#x}"
                self.fragmented = True
            self.transport(body, frame[:12] + struct.pack("!H", ethertype) + payload)
        else:
            self.f["network"] = f"ethertype {ethertype:#06x}"

    def arp(self, body: bytes) -> str:
        self.need(body, 8, "ARP header")
        htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", body)
        if (htype, ptype, hlen, plen) != (1, ETHERTYPE_IPV4, 6, 4):
            return f"hardware {htype} protocol {ptype:#06x} op {op}"
        self.need(body, 28, "ARP message")
        sha, spa = bytes_to_mac(body[8:14]), ipaddress.IPv4Address(body[14:18])
        tpa = ipaddress.IPv4Address(body[24:28])
        if op == 1:
            return f"who-has {tpa} tell {spa}"
        if op == 2:
            return f"{spa} is-at {sha}"
        return f"op {op} {spa} > {tpa}"

    def transport(self, body: bytes, untagged: bytes) -> None:
        proto = self.f["protocol"]
        first_fragment = bool(self.f.get("info"))
        text = ""
        if proto == "ICMP":
            text = self.icmp(body, _ICMP4, _ECHO4, "ICMP")
        elif proto == "ICMPv6":
            text = self.icmp6(body)
        elif proto == "TCP":
            text = self.tcp(body)
        elif proto == "UDP":
            self.need(body, _UDP_HEADER_LEN, "UDP header")
            sport, dport, ulen = struct.unpack_from("!HHH", body)
            if ulen < _UDP_HEADER_LEN:
                raise _Partial(f"UDP length {ulen} invalid for {len(body)} bytes")
            self.fits(ulen, len(body), "UDP length", "")
            if self.f["network"] == "IPv4" and (sport, dport) in _DHCP_PORTS:
                self.f["protocol"] = "DHCP"
                if not (self.cut or self.fragmented):
                    text = _dhcp(untagged)
            text = text or f"{sport} > {dport} len {ulen - _UDP_HEADER_LEN}"
        if first_fragment:
            text = f"{self.f['info']} {text}".rstrip()
        self.f["info"] = text

    def icmp(self, body: bytes, names: dict[int, str], echo: frozenset[int], what: str) -> str:
        self.need(body, 4, f"{what} header")
        kind, code = body[0], body[1]
        name = names.get(kind, f"type {kind}")
        if kind in echo:
            self.need(body, 8, f"{what} echo")
            ident, seq = struct.unpack_from("!HH", body, 4)
            return f"{name} id {ident} seq {seq}"
        return f"{name} code {code}" if code or kind not in names else name

    def icmp6(self, body: bytes) -> str:
        self.need(body, 4, "ICMPv6 header")
        kind = body[0]
        if kind not in (135, 136):
            return self.icmp(body, _ICMP6, _ECHO6, "ICMPv6")
        self.need(body, 24, f"ICMPv6 {_ICMP6[kind]}")
        target = ipaddress.IPv6Address(body[8:24])
        lladdr = self.ndp_lladdr(body[24:], 1 if kind == 135 else 2)
        if kind == 135:
            return f"{_ICMP6[kind]} who-has {target}" + (f" from {lladdr}" if lladdr else "")
        return f"{_ICMP6[kind]} {target}" + (f" is-at {lladdr}" if lladdr else "")

    def ndp_lladdr(self, options: bytes, wanted: int) -> str | None:
        """The source (1) or target (2) link-layer address option, if present and well-formed."""
        offset = 0
        while offset + 2 <= len(options):
            kind, units = options[offset], options[offset + 1]
            if units == 0:
                raise _Partial("NDP option of length 0")
            self.need(options[offset:], units * 8, f"NDP option {kind}")
            if kind == wanted and units == 1:
                return bytes_to_mac(options[offset + 2:offset + 8])
            offset += units * 8
        return None

    def tcp(self, body: bytes) -> str:
        self.need(body, _TCP_HEADER_LEN, "TCP header")
        sport, dport, seq, ack, off_flags = struct.unpack_from("!HHIIH", body)
        header_len = (off_flags >> 12) * 4
        if header_len < _TCP_HEADER_LEN:
            raise _Partial(f"TCP header length {header_len} invalid for {len(body)} bytes")
        self.need(body, header_len, "TCP options")
        flags = "".join(c for bit, c in _TCP_FLAGS if off_flags & bit) or "none"
        text = f"{sport} > {dport} [{flags}] seq {seq}"
        if off_flags & 0x10:
            text += f" ack {ack}"
        return f"{text} len {len(body) + self.cut - header_len}"


def summarize(frame: bytes, *, port: int = VXLAN_PORT, timestamp: float = 0.0, wire_len: int | None = None,
              fragments: OuterFragments | None = None) -> VxlanSummary | None:
    """Summary of an underlay Ethernet frame, or None when it is clearly not UDP to/from ``port``.

    ``wire_len`` is the frame's length on the wire when a snap length cut it (pcap's original
    length); ``fragments`` lets later outer fragments of VXLAN datagrams be shown.  Frames that
    cannot be decoded far enough to tell, or that are on ``port`` but do not decode, are returned
    with ``malformed`` set.
    """
    frame = bytes(frame)
    cut = max(0, (wire_len or 0) - len(frame))
    d = _Decoder(port, fragments, cut)
    d.f["timestamp"] = timestamp
    if cut:
        d.f["truncated"] = f"captured {len(frame)} of {wire_len} bytes"
    try:
        payload = d.outer(frame)
        if payload is not None:
            d.inner(d.vxlan(payload))
    except _NotOurs:
        return None
    except _Short as exc:
        d.f["truncated"] = "; ".join(filter(None, (d.f.get("truncated"), str(exc))))
    except PacketError as exc:
        d.f["malformed"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must still be one line, not a traceback
        d.f["malformed"] = f"undecodable: {type(exc).__name__}: {exc}"
    return VxlanSummary(**d.f)


def _proto_name(proto: int) -> str:
    return {_PROTO_ICMP: "ICMP", _PROTO_TCP: "TCP", _PROTO_UDP: "UDP", _PROTO_ICMPV6: "ICMPv6"}.get(
        proto, f"proto {proto}")


def _dhcp(frame: bytes) -> str:
    """The DHCP summary of an untagged inner frame (the daemon's own strict parser: it raises
    PacketError on bad input, which makes the line malformed)."""
    msg = parse_dhcp(frame)
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
    """Local wall-clock time of day with microseconds, as tcpdump prints it; seconds since the
    epoch for a time no calendar holds (a damaged or hostile capture file)."""
    try:
        return datetime.fromtimestamp(timestamp).strftime("%H:%M:%S.%f")
    except (OverflowError, OSError, ValueError):
        return f"{timestamp:.6f}"


def format_summary(s: VxlanSummary) -> str:
    """One line: time, outer endpoints, VNI, inner MACs, VLAN, network and transport summary."""
    parts = [format_time(s.timestamp)]
    parts += [f"vlan {tag}" for tag in s.outer_vlans]
    if s.outer_src is not None:
        parts.append(f"{_endpoint(s.outer_src, s.outer_sport)} > {_endpoint(s.outer_dst, s.outer_dport)}")
    if s.fragment is not None:
        parts.append(f"({s.fragment})")
    if s.vni is not None:
        parts.append(f"vni {s.vni}")
    if s.src_mac is not None:
        parts.append(f"{s.src_mac} > {s.dst_mac}")
    parts += [f"vlan {tag}" for tag in s.vlans or ((s.vlan,) if s.vlan is not None else ())]
    if s.network is not None:
        parts.append(s.network)
    if s.src_ip is not None:
        parts.append(f"{s.src_ip} > {s.dst_ip}")
    parts += s.extensions
    if s.protocol is not None:
        parts.append(s.protocol)
    if s.info:
        parts.append(s.info)
    if s.malformed is not None:
        parts.append(f"malformed: {s.malformed}")
    if s.truncated is not None:
        parts.append(f"[truncated: {s.truncated}]")
    return " ".join(parts)


def summary_to_dict(s: VxlanSummary) -> dict[str, Any]:
    """Every field (None as null, tuples as lists) plus the rendered line, for one JSON object per frame."""
    out = dataclasses.asdict(s)
    for key in ("outer_vlans", "vlans", "extensions"):
        out[key] = list(out[key])
    out["text"] = format_summary(s)
    return out
