"""One VXLAN device for many VNIs (Linux >= 5.18): ``external`` + ``vnifilter`` and a VLAN-aware bridge.

The layout FRR recommends for EVPN: a single collect-metadata VXLAN device whose VNI filter lists
the VNIs it accepts (`bridge vni add`), FDB entries keyed by (MAC, NDA_SRC_VNI), and a bridge with
``vlan_filtering 1`` whose ``vlan_tunnel`` port mapping (`bridge vlan add ... tunnel_info id N`)
turns VLAN V into VNI N on the way out and back: a frame sent into the device carries its VNI as
tunnel metadata, which the bridge's vlan_tunnel code attaches (net/bridge/br_vlan_tunnel.c); one
sent without (AF_PACKET, measured) is dropped silently, no counter moves.

Measured on 6.18 (this machine kind): the device, its VNI filter (a VNI not listed is dropped on
receive) and per-VNI FDB entries all work, but the kernel is built without
CONFIG_BRIDGE_VLAN_FILTERING (``vlan_filtering 1`` is EOPNOTSUPP; no 8021q, cls_flower,
act_tunnel_key or act_bpf either), so nothing can give a guest's frame its VNI: the shared layout
refuses there with `VlanFilteringMissing` (`ensure_vlan_bridge`, called first, leaves nothing behind).
The VLAN side (vlan_tunnel port, `tunnel_info` per VLAN, guest access ports) is not written: no
kernel here could test it.  pyroute2 0.9.7 knows neither IFLA_VXLAN_VNIFILTER nor the
RTM_NEWTUNNEL attributes, hence the hand-packed messages.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import struct
from dataclasses import dataclass
from typing import Iterable

from .device import _as_ip, _create_link, _delete_link, _get_link, _ipr, _isolate, _kind, _underlay_index, _vxlan_data
from .netlink import (ADD_FLAGS, AF_BRIDGE, DEL_FLAGS, IFINFOMSG, NLH, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
                      NLM_F_REQUEST, NLMSG_ERROR, RTM_NEWLINK, KernelTables, _attr, _parse_error, open_route_socket,
                      parse_attrs)
from .types import DeviceConflict, IPAddress, KmodError, OpFailure

__all__ = ["SharedDeviceSpec", "SharedDevice", "SharedTables", "VlanFilteringMissing", "ensure_shared_vxlan",
           "ensure_vlan_bridge", "encode_shared_vxlan", "encode_vni"]

IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_VXLAN_LINK = 3
IFLA_VXLAN_LOCAL = 4
IFLA_VXLAN_LEARNING = 7
IFLA_VXLAN_PORT = 15
IFLA_VXLAN_LOCAL6 = 17
IFLA_VXLAN_COLLECT_METADATA = 25
IFLA_VXLAN_VNIFILTER = 30  # 5.18
NLA_F_NESTED = 0x8000

RTM_NEWTUNNEL = 120
RTM_DELTUNNEL = 121
RTM_GETTUNNEL = 122
TUNNEL_MSG = struct.Struct("=BBHI")  # struct tunnel_msg: family, flags, reserved2, ifindex
VXLAN_VNIFILTER_ENTRY = 1
VXLAN_VNIFILTER_ENTRY_START = 1
VXLAN_VNIFILTER_ENTRY_END = 2
_U32 = struct.Struct("=I")


class VlanFilteringMissing(KmodError):
    """The kernel has no VLAN-aware bridge (CONFIG_BRIDGE_VLAN_FILTERING): the shared layout cannot map VLAN ↔ VNI."""


@dataclass(frozen=True, slots=True)
class SharedDeviceSpec:
    name: str
    local_ip: IPAddress
    port: int = 4789
    underlay_dev: str | None = None
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class SharedDevice:
    name: str
    ifindex: int
    created: bool


def encode_shared_vxlan(spec: SharedDeviceSpec, seq: int, underlay_index: int | None = None) -> bytes:
    """RTM_NEWLINK creating `ip link add NAME type vxlan external vnifilter local IP dstport P nolearning`."""
    local = _as_ip(spec.local_ip)
    data = (_attr(IFLA_VXLAN_COLLECT_METADATA, b"\x01") + _attr(IFLA_VXLAN_VNIFILTER, b"\x01")
            + _attr(IFLA_VXLAN_LEARNING, b"\x00") + _attr(IFLA_VXLAN_PORT, struct.pack("!H", spec.port))
            + _attr(IFLA_VXLAN_LOCAL6 if local.version == 6 else IFLA_VXLAN_LOCAL, local.packed))
    if underlay_index is not None:
        data += _attr(IFLA_VXLAN_LINK, _U32.pack(underlay_index))
    info = _attr(IFLA_INFO_KIND, b"vxlan\x00") + _attr(IFLA_INFO_DATA | NLA_F_NESTED, data)
    body = IFINFOMSG.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, spec.name.encode() + b"\x00")
    if spec.mtu is not None:
        body += _attr(IFLA_MTU, _U32.pack(spec.mtu))
    body += _attr(IFLA_LINKINFO | NLA_F_NESTED, info)
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    return NLH.pack(NLH.size + len(body), RTM_NEWLINK, flags, seq, 0) + body


def encode_vni(ifindex: int, vni: int, seq: int, *, add: bool = True) -> bytes:
    """RTM_NEWTUNNEL/RTM_DELTUNNEL: `bridge vni add|del dev DEV vni N`."""
    if not 0 < vni < (1 << 24):
        raise ValueError(f"invalid vni {vni!r}")
    entry = _attr(VXLAN_VNIFILTER_ENTRY | NLA_F_NESTED, _attr(VXLAN_VNIFILTER_ENTRY_START, _U32.pack(vni)))
    body = TUNNEL_MSG.pack(AF_BRIDGE, 0, 0, ifindex) + entry
    mtype, flags = (RTM_NEWTUNNEL, ADD_FLAGS) if add else (RTM_DELTUNNEL, DEL_FLAGS)
    return NLH.pack(NLH.size + len(body), mtype, flags, seq, 0) + body


class SharedTables(KernelTables):
    """KernelTables of the shared device plus its VNI filter (batched like the FDB: thousands of VNIs).

    Per-overlay FDB work uses `KernelTables(ifindex, src_vni=VNI)`, which keys every entry by its VNI."""

    async def add_vnis(self, vnis: Iterable[int]) -> list[OpFailure]:
        return await self._batch(vnis, lambda v, s: encode_vni(self.ifindex, v, s, add=True), (_errno.EEXIST,))

    async def del_vnis(self, vnis: Iterable[int]) -> list[OpFailure]:
        return await self._batch(vnis, lambda v, s: encode_vni(self.ifindex, v, s, add=False), (_errno.ENOENT,))

    async def dump_vnis(self) -> set[int]:
        """The VNIs the device accepts (the kernel reports runs of consecutive VNIs as START..END)."""
        async with self._lock:
            out: set[int] = set()

            def on_msg(buf, off: int, mlen: int, mtype: int) -> None:
                if mtype != RTM_NEWTUNNEL or mlen < NLH.size + TUNNEL_MSG.size:
                    return
                _f, _fl, _r, ifindex = TUNNEL_MSG.unpack_from(buf, off + NLH.size)
                if ifindex != self.ifindex:
                    return
                start = off + NLH.size + TUNNEL_MSG.size
                pos = start
                while pos + 4 <= off + mlen:  # several VXLAN_VNIFILTER_ENTRY nests, same type: walk them all
                    alen, atype = struct.unpack_from("=HH", buf, pos)
                    if alen < 4:
                        break
                    if atype & 0x3FFF == VXLAN_VNIFILTER_ENTRY:
                        inner = parse_attrs(buf, pos + 4, pos + alen)
                        first = inner.get(VXLAN_VNIFILTER_ENTRY_START)
                        if first is not None and len(first) == 4:
                            lo = _U32.unpack(first)[0]
                            last = inner.get(VXLAN_VNIFILTER_ENTRY_END)
                            hi = _U32.unpack(last)[0] if last is not None and len(last) == 4 else lo
                            out.update(range(lo, hi + 1))
                    pos += (alen + 3) & ~3

            req = TUNNEL_MSG.pack(AF_BRIDGE, 0, 0, self.ifindex)
            await self._dump(RTM_GETTUNNEL, req, on_msg, reset=out.clear)
            return out


def _ack(netns: str | None, msg: bytes) -> int:
    """Send one request, return its errno (0: done)."""
    sock = open_route_socket(netns)
    try:
        sock.setblocking(True)
        sock.settimeout(5.0)
        sock.send(msg)
        buf = memoryview(sock.recv(65536))
        mlen, mtype, mflags, _seq, _pid = NLH.unpack_from(buf, 0)
        return _parse_error(buf, 0, mlen, mflags)[0] if mtype == NLMSG_ERROR else 0
    finally:
        sock.close()


def _check_shared(spec: SharedDeviceSpec, link) -> None:
    if _kind(link) != "vxlan":
        raise DeviceConflict(f"device {spec.name!r} exists but is of kind {_kind(link)!r}, not 'vxlan'")
    d = _vxlan_data(link)
    diffs = []
    if not d.get("IFLA_VXLAN_COLLECT_METADATA"):
        diffs.append("external (collect_metadata) off")
    local = _as_ip(spec.local_ip)
    have = d.get("IFLA_VXLAN_LOCAL6") if local.version == 6 else d.get("IFLA_VXLAN_LOCAL")
    if have is None or _as_ip(have) != local:
        diffs.append(f"local_ip (wanted {local})")
    if d.get("IFLA_VXLAN_PORT") != spec.port:
        diffs.append(f"port (existing {d.get('IFLA_VXLAN_PORT')}, wanted {spec.port})")
    if diffs:
        raise DeviceConflict(f"vxlan device {spec.name!r} exists with different parameters: " + "; ".join(diffs))


async def ensure_vlan_bridge(name: str, netns: str | None = None) -> tuple[int, bool]:
    """Create (or adopt) the VLAN-aware bridge: (ifindex, created).  VlanFilteringMissing where the
    kernel has no VLAN filtering (this machine kind), before anything else of the layout exists."""
    async with _ipr(netns) as ipr:
        br = await _get_link(ipr, ifname=name)
        if br is None:
            try:
                br, created = await _create_link(ipr, "bridge", ifname=name, kind="bridge", br_vlan_filtering=1)
            except KmodError as exc:
                if "Operation not supported" not in str(exc):
                    raise
                raise VlanFilteringMissing(
                    "vxlan_layout=shared needs a VLAN-aware bridge to map VLAN <-> VNI and this kernel has none "
                    "(built without CONFIG_BRIDGE_VLAN_FILTERING: bridge vlan_filtering 1 is EOPNOTSUPP); "
                    "use vxlan_layout=per-vni") from None
            await _isolate(ipr, br, netns)
            return br["index"], created
        if _kind(br) != "bridge":
            raise DeviceConflict(f"device {name!r} exists but is of kind {_kind(br)!r}, not 'bridge'")
        return br["index"], False


async def ensure_shared_vxlan(spec: SharedDeviceSpec, netns: str | None = None) -> SharedDevice:
    """Create (or adopt an identical) external + vnifilter VXLAN device, isolated from the host and up."""
    async with _ipr(netns) as ipr:
        underlay_index = await _underlay_index(ipr, spec.underlay_dev)
        link = await _get_link(ipr, ifname=spec.name)
        created = link is None
        if created:
            code = _ack(netns, encode_shared_vxlan(spec, 1, underlay_index))
            if code and code != _errno.EEXIST:
                raise KmodError(f"creating shared vxlan {spec.name!r} (external vnifilter) failed: "
                                f"{_errno.errorcode.get(code, code)}")
            created = code == 0
            link = await _get_link(ipr, ifname=spec.name)
            if link is None:
                raise KmodError(f"shared vxlan {spec.name!r} vanished after creation")
        try:
            _check_shared(spec, link)
            await _isolate(ipr, link, netns)
            if not link.get("flags", 0) & 1:
                await ipr.link("set", index=link["index"], state="up")
        except BaseException:
            if created:
                with contextlib.suppress(Exception):
                    await _delete_link(ipr, link["index"], repr(spec.name))
            raise
        return SharedDevice(spec.name, link["index"], created)

