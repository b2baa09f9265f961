"""Independent frame builders and checksums for the packet tests.

Deliberately uses only struct, never varpd.packet, so the tests check our code against
a second implementation rather than against itself.
"""

from __future__ import annotations

import ipaddress
import struct


def ones_sum(data: bytes) -> int:
    """RFC 1071 folded 16-bit ones'-complement sum (not complemented)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def checksum(data: bytes) -> int:
    return ~ones_sum(data) & 0xFFFF


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def ip4(s: str) -> bytes:
    return ipaddress.IPv4Address(s).packed


def ip6(s: str) -> bytes:
    return ipaddress.IPv6Address(s).packed


def ether(dst: str, src: str, ethertype: int, payload: bytes, vlan: int | None = None) -> bytes:
    if vlan is None:
        return mac(dst) + mac(src) + struct.pack("!H", ethertype) + payload
    return mac(dst) + mac(src) + struct.pack("!HHH", 0x8100, vlan, ethertype) + payload


def arp_request(src_mac: str, sender_ip: str, target_ip: str, *, vlan: int | None = None,
                op: int = 1, pad: bool = True) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac(src_mac), ip4(sender_ip),
                       b"\x00" * 6, ip4(target_ip))
    frame = ether("ff:ff:ff:ff:ff:ff", src_mac, 0x0806, body, vlan)
    return frame.ljust(60, b"\x00") if pad else frame


def icmp6_pseudo(src: bytes, dst: bytes, length: int) -> bytes:
    return src + dst + struct.pack("!I3xB", length, 58)


def ns_frame(src_mac: str, src_ip: str, target: str, *, dst_ip: str | None = None,
             dst_mac: str | None = None, hop_limit: int = 255, sllao: bool = True,
             corrupt_checksum: bool = False, vlan: int | None = None) -> bytes:
    tgt = ip6(target)
    dst = ip6(dst_ip) if dst_ip else ip6("ff02::1:ff00:0")[:13] + tgt[13:]
    if dst_mac is None:
        dst_mac = ":".join(f"{b:02x}" for b in b"\x33\x33" + dst[12:])
    opts = struct.pack("!BB6s", 1, 1, mac(src_mac)) if sllao else b""
    body = struct.pack("!BBHI16s", 135, 0, 0, 0, tgt) + opts
    csum = checksum(icmp6_pseudo(ip6(src_ip), dst, len(body)) + body)
    if corrupt_checksum:
        csum ^= 0x0101
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    ipv6 = struct.pack("!IHBB16s16s", 0x60000000, len(body), 58, hop_limit, ip6(src_ip), dst)
    return ether(dst_mac, src_mac, 0x86DD, ipv6 + body, vlan)


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes, *, ttl: int = 64) -> bytes:
    udp_len = 8 + len(payload)
    pseudo = ip4(src) + ip4(dst) + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    udp_sum = checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0, ttl, 17, 0, ip4(src), ip4(dst))
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + udp


def bootp(op: int, xid: int, chaddr: str, options: bytes, *, flags: int = 0,
          ciaddr: str = "0.0.0.0", yiaddr: str = "0.0.0.0") -> bytes:
    fixed = struct.pack("!BBBBIHH4s4s4s4s16s64s128sI", op, 1, 6, 0, xid, 0, flags, ip4(ciaddr),
                        ip4(yiaddr), ip4("0.0.0.0"), ip4("0.0.0.0"), mac(chaddr) + bytes(10),
                        b"", b"", 0x63825363)
    return fixed + options


def udhcpc_discover(client_mac: str = "52:54:00:12:34:56", xid: int = 0x3903F326,
                    flags: int = 0, vlan: int | None = None) -> bytes:
    """What busybox udhcpc 1.36 puts on the wire for `udhcpc -x hostname:vm1`."""
    opts = (
        bytes((53, 1, 1))
        + bytes((61, 7, 1)) + mac(client_mac)
        + bytes((57, 2)) + struct.pack("!H", 576)
        + bytes((55, 7, 1, 3, 6, 12, 15, 28, 42))
        + bytes((12, 3)) + b"vm1"
        + bytes((60, 12)) + b"udhcp 1.36.1"
        + b"\xff"
    )
    dhcp = bootp(1, xid, client_mac, opts, flags=flags).ljust(300, b"\x00")
    return ether("ff:ff:ff:ff:ff:ff", client_mac, 0x0800,
                 ipv4_udp("0.0.0.0", "255.255.255.255", 68, 67, dhcp), vlan)


def parse_options(raw: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i < len(raw) and raw[i] != 255:
        if raw[i] == 0:
            i += 1
            continue
        out[raw[i]] = raw[i + 2:i + 2 + raw[i + 1]]
        i += 2 + raw[i + 1]
    assert raw[i] == 255, "options not terminated by END"
    return out
