"""Keep the host off the tenant's L2: the bridge and VXLAN device of an overlay carry no host address.

A bridge or VXLAN device gets an IPv6 link-local address when it comes up, and with it the
host answers guests (ping, TCP to a listener on ``::``) and sends router solicitations onto
the tenant's segment; with IPv4 the host answers a guest's ARP for any of its addresses.
So before a device is brought up (and again when an existing one is adopted):

- IPv6: ``addr_gen_mode none`` (no link-local is ever generated; one left by an older
  varpd is deleted), so the host has no IPv6 presence on the segment;
- IPv4: ``rp_filter = 1`` (a guest's packets to the host have no route back through the
  device and are dropped, ARP included) and ``arp_ignore = 8`` (never answer ARP).

Only netlink (IFLA_AF_SPEC), so it needs neither /proc/sys nor a namespace switch. pyroute2
cannot encode IFLA_INET_CONF (it treats it as a fixed struct), hence the hand-packed request.
"""
from __future__ import annotations

import errno as _errno
import socket
import struct

from .netlink import (
    IFINFOMSG,
    NLH,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    RTM_NEWLINK,
    _attr,
    _parse_error,
    open_route_socket,
)
from .types import KmodError

__all__ = ["isolate_link", "encode_isolation"]

IFLA_AF_SPEC = 26
NLA_F_NESTED = 0x8000
IFLA_INET_CONF = 1
IPV4_DEVCONF_RP_FILTER = 8
IPV4_DEVCONF_ARP_IGNORE = 19
IFLA_INET6_ADDR_GEN_MODE = 8
IN6_ADDR_GEN_MODE_NONE = 1
ARP_IGNORE_ALL = 8  # "do not reply for all local addresses"

_U32 = struct.Struct("=I")


def encode_isolation(ifindex: int, seq: int, family: int) -> bytes:
    """RTM_NEWLINK (a setlink of an existing index) carrying the isolation settings of one family."""
    if family == socket.AF_INET:
        conf = (_attr(IPV4_DEVCONF_RP_FILTER, _U32.pack(1))
                + _attr(IPV4_DEVCONF_ARP_IGNORE, _U32.pack(ARP_IGNORE_ALL)))
        inner = _attr(IFLA_INET_CONF | NLA_F_NESTED, conf)
    else:
        inner = _attr(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE]))
    spec = _attr(IFLA_AF_SPEC | NLA_F_NESTED, _attr(family | NLA_F_NESTED, inner))
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0) + spec
    return NLH.pack(NLH.size + len(body), RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def isolate_link(ifindex: int, name: str, netns: str | None = None) -> None:
    """Apply the settings above to `ifindex`; a kernel without IPv6 (EAFNOSUPPORT) has nothing to turn off."""
    sock = open_route_socket(netns)
    try:
        sock.setblocking(True)
        sock.settimeout(5.0)
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            sock.send(encode_isolation(ifindex, seq, family))
            buf = memoryview(sock.recv(65536))
            mlen, mtype, mflags, _seq, _pid = NLH.unpack_from(buf, 0)
            if mtype != NLMSG_ERROR:
                continue
            code, msg = _parse_error(buf, 0, mlen, mflags)
            if code == 0 or (family == socket.AF_INET6 and code == _errno.EAFNOSUPPORT):
                continue
            what = "IPv4 rp_filter/arp_ignore" if family == socket.AF_INET else "IPv6 addrgenmode none"
            raise KmodError(f"isolating {name!r} from the host ({what}) failed: "
                            f"{_errno.errorcode.get(code, code)}{': ' + msg if msg else ''}")
    except OSError as exc:
        raise KmodError(f"isolating {name!r} from the host failed: {exc}") from exc
    finally:
        sock.close()
