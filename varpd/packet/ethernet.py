"""Ethernet II framing with at most one 802.1Q tag, shared by every parser and builder."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import dpkt

from varpd.packet.errors import PacketError
from varpd.packet.mac import bytes_to_mac, mac_to_bytes

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_IPV6 = 0x86DD

ETHER_HEADER_LEN = 14
VLAN_TAG_LEN = 4
# Largest untagged frame including FCS; a VLAN tag adds VLAN_TAG_LEN.
MAX_FRAME_LEN = 1518

# Everything dpkt/struct/slicing may throw at us on hostile input.
_DECODE_ERRORS = (dpkt.Error, struct.error, IndexError, KeyError, ValueError, TypeError)


@contextlib.contextmanager
def decoding(what: str) -> Iterator[None]:
    """Turn any library decode failure into a PacketError naming what was decoded."""
    try:
        yield
    except PacketError:
        raise
    except _DECODE_ERRORS as exc:
        raise PacketError(f"malformed {what}: {exc!s} ({type(exc).__name__})") from exc


@dataclass(frozen=True, slots=True)
class EthernetHeader:
    """The link header of a frame; payload is everything after the (tagged) header."""

    dst_mac: str
    src_mac: str
    ethertype: int
    vlan: int | None
    payload: bytes

    @property
    def max_frame_len(self) -> int:
        return MAX_FRAME_LEN + (VLAN_TAG_LEN if self.vlan is not None else 0)


def parse_ethernet(frame: bytes) -> EthernetHeader | None:
    """Decode an Ethernet II header; None for 802.3/LLC, QinQ and other framings we never proxy."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise PacketError(f"frame must be bytes, not {type(frame).__name__}")
    frame = bytes(frame)
    if len(frame) < ETHER_HEADER_LEN:
        raise PacketError(f"frame of {len(frame)} bytes is shorter than an Ethernet header")
    with decoding("Ethernet header"):
        eth = dpkt.ethernet.Ethernet(frame)
    if eth.type <= 1500:  # 802.3 length field (and dpkt's ISL/LLC heuristics) - not ours
        return None
    tags = getattr(eth, "vlan_tags", None) or []
    vlan: int | None = None
    ethertype = eth.type
    offset = ETHER_HEADER_LEN
    if tags:
        if eth.type != ETHERTYPE_VLAN or len(tags) != 1 or tags[0].type == ETHERTYPE_VLAN:
            return None  # 802.1ad / QinQ: only one 802.1Q tag is supported
        vlan = tags[0].id
        ethertype = tags[0].type
        offset += VLAN_TAG_LEN
    elif getattr(eth, "mpls_labels", None):
        return None
    return EthernetHeader(bytes_to_mac(eth.dst), bytes_to_mac(eth.src), ethertype, vlan,
                          frame[offset:])


def build_ethernet(dst_mac: str, src_mac: str, ethertype: int, payload: bytes,
                   vlan: int | None = None) -> bytes:
    """Frame payload, adding one 802.1Q tag when vlan is given (replies go back on the request's VLAN)."""
    eth = dpkt.ethernet.Ethernet(dst=mac_to_bytes(dst_mac), src=mac_to_bytes(src_mac),
                                 type=ethertype, data=payload)
    if vlan is not None:
        if not isinstance(vlan, int) or not 0 <= vlan <= 4095:
            raise PacketError(f"invalid VLAN id {vlan!r}")
        eth.vlan_tags = [dpkt.ethernet.VLANtag8021Q(id=vlan, type=ethertype)]
    return bytes(eth)
