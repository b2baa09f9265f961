"""EVPN routes as varpd sees them, and the table that turns them into a Mapping (pure: no I/O).

Route types used (RFC 7432, VXLAN per RFC 8365):
- type 2, MAC/IP advertisement: MAC (and an IP) behind the VTEP in the route's next hop; the VNI
  is the route's label (RFC 8365 §5.1.3); the MAC mobility extended community carries the
  sequence number that orders moves.
- type 3, inclusive multicast Ethernet tag (IMET): "this VTEP floods BUM traffic of the VNI",
  the PMSI tunnel attribute says ingress replication; its originator IP is a flood peer.

Which route wins for a MAC (RFC 7432 §15.2): a route still advertised over one withdrawn and
held (VTEP-loss hold, see `hold`); a sticky (static) one over one that is not, whatever the
sequence numbers; then the highest sequence number; on equal numbers a route that is not
stale, then the lowest VTEP address.  A late withdrawal of the old location therefore never
removes a fresher entry: the withdrawn route simply leaves the candidates.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Iterable

from varpd.model import Destination, IPAddress, Mapping, MappingRecord

TYPE2, TYPE3 = 2, 3
RT_SUBTYPE = 0x02  # route target (RFC 4360)
TUNNEL_VXLAN = 8  # BGP encapsulation extended community, tunnel type VXLAN (RFC 8365 §5.1.3)
PMSI_INGRESS_REPLICATION = 6


@dataclass(frozen=True, slots=True)
class EvpnRoute:
    """One path as the engine reported it (best path of its NLRI)."""

    kind: int  # TYPE2 or TYPE3
    rd: str  # "192.0.2.2:2" or "65000:100"
    vtep: IPAddress  # next hop (type 2) or originating router's IP (type 3)
    vni: int  # label (type 2) or PMSI label (type 3), 0 when absent
    mac: str = ""
    ip: IPAddress | None = None
    seq: int = 0
    rts: tuple[str, ...] = ()
    peer: str = ""  # the BGP neighbour it came through
    stale: bool = False
    sticky: bool = False  # MAC mobility community's static flag: the MAC cannot move (RFC 7432 §7.7)
    held: bool = False  # withdrawn, kept (stale) while its VTEP's loss is held

    @property
    def key(self) -> tuple:
        """The NLRI: what a withdrawal names (the RD makes two VTEPs' routes distinct)."""
        return (self.kind, self.rd, self.mac, self.ip) if self.kind == TYPE2 else (self.kind, self.rd, self.vtep)

    def describe(self) -> dict:
        out = {"type": self.kind, "rd": self.rd, "next_hop": str(self.vtep), "vni": self.vni, "seq": self.seq,
               "rt": list(self.rts), "peer": self.peer, "stale": self.stale, "held": self.held}
        if self.kind == TYPE2:
            out.update(mac=self.mac, ip=None if self.ip is None else str(self.ip), sticky=self.sticky)
        return out


def auto_rd(router_id: str, vni: int) -> str:
    """FRR's auto RD is router-id:N with N a local 16-bit index; here N is the VNI (its low 16 bits
    above 65535): unique per VTEP and VNI, which is all an RD must be, and readable."""
    return f"{router_id}:{vni & 0xFFFF if vni > 0xFFFF else vni}"


def auto_rt(asn: int, vni: int) -> str:
    """FRR's auto RT for an iBGP/eBGP L2VNI: ASN:VNI (2-byte ASN form; a 4-byte ASN uses its low 16 bits)."""
    return f"{asn & 0xFFFF if asn > 0xFFFF else asn}:{vni}"


def parse_rd(text: str) -> tuple[str, int | str, int]:
    """'192.0.2.1:100' → ('ip', '192.0.2.1', 100); '65000:100' → ('as2', 65000, 100); ValueError otherwise."""
    admin, sep, assigned = str(text).strip().rpartition(":")
    if not sep or not assigned.isdigit():
        raise ValueError(f"{text!r} is not ADMIN:NUMBER (192.0.2.1:100 or 65000:100)")
    number = int(assigned)
    if "." in admin:
        ipaddress.IPv4Address(admin)
        if number > 0xFFFF:
            raise ValueError(f"{text!r}: the number after an IPv4 address is at most 65535")
        return ("ip", admin, number)
    if not admin.isdigit():
        raise ValueError(f"{text!r} is not ADMIN:NUMBER (192.0.2.1:100 or 65000:100)")
    asn = int(admin)
    if asn <= 0xFFFF and number <= 0xFFFFFFFF:
        return ("as2", asn, number)
    if asn <= 0xFFFFFFFF and number <= 0xFFFF:
        return ("as4", asn, number)
    raise ValueError(f"{text!r}: out of range for a route distinguisher")


def parse_rt(text: str) -> tuple[int, int]:
    """'65000:100' → (65000, 100): the two-octet-AS route target form FRR uses for L2VNIs."""
    asn, sep, number = str(text).strip().partition(":")
    if not sep or not asn.isdigit() or not number.isdigit() or int(asn) > 0xFFFF or int(number) > 0xFFFFFFFF:
        raise ValueError(f"{text!r} is not ASN:NUMBER with a 2-byte ASN (65000:100)")
    return int(asn), int(number)


@dataclass
class RouteTable:
    """The learned routes of one VNI, and the Mapping and flood list they give.

    `local_ip` is this host's VTEP: routes naming it are ours coming back (a route reflector
    reflects them to every client) and are not learned.  `local` holds this host's own records
    (advertised, and served like any other record)."""

    local_ip: IPAddress | None = None
    port: int = 4789
    routes: dict[tuple, EvpnRoute] = field(default_factory=dict)
    by_mac: dict[str, dict[tuple, EvpnRoute]] = field(default_factory=dict)
    local: dict[str, MappingRecord] = field(default_factory=dict)
    # sequence numbers this host advertises its local MACs with (bumped past a remote's on a move)
    local_seq: dict[str, int] = field(default_factory=dict)

    def _index(self, r: EvpnRoute) -> None:
        if r.kind == TYPE2:
            self.by_mac.setdefault(r.mac, {})[r.key] = r

    def _unindex(self, r: EvpnRoute) -> None:
        if r.kind == TYPE2 and (routes := self.by_mac.get(r.mac)) is not None:
            routes.pop(r.key, None)
            if not routes:
                del self.by_mac[r.mac]

    def learn(self, route: EvpnRoute) -> str | None:
        """Add or replace a route; the MAC it touched (None for type 3 and our own routes).  A MAC
        advertised by a VTEP drops the held routes other VTEPs withdrew for it: they were kept for
        a VTEP that may come back, and the MAC is elsewhere now."""
        if self.local_ip is not None and route.vtep == self.local_ip:
            return None
        old = self.routes.get(route.key)
        if old is not None:
            self._unindex(old)
        self.routes[route.key] = route
        self._index(route)
        if route.kind == TYPE2 and not route.held:
            for other in [r for r in self.by_mac[route.mac].values() if r.held and r.vtep != route.vtep]:
                self.forget(other.key)
        return route.mac or None

    def forget(self, key: tuple) -> str | None:
        old = self.routes.pop(key, None)
        if old is None:
            return None
        self._unindex(old)
        return old.mac or None

    def mark_stale(self, peer: str | None = None) -> int:
        """Every route (of `peer`, or all) is stale from now; how many."""
        n = 0
        for key, r in list(self.routes.items()):
            if (peer is None or r.peer == peer) and not r.stale:
                self.routes[key] = s = replace(r, stale=True)
                self._index(s)
                n += 1
        return n

    def sweep_stale(self, peer: str | None = None) -> list[str]:
        """Drop the routes still stale (of `peer`, or all); the MACs touched.  Held routes are not
        the session's to drop: they go when their VTEP's hold ends (`sweep_held`)."""
        macs = []
        for key in [k for k, r in self.routes.items()
                    if r.stale and not r.held and (peer is None or r.peer == peer)]:
            if (mac := self.forget(key)) is not None:
                macs.append(mac)
        return macs

    def hold(self, key: tuple) -> bool:
        """A withdrawn route is kept, stale and held, because its VTEP withdrew everything at once
        (a host stopped or crashed behind a route reflector that keeps nothing): False if unknown."""
        r = self.routes.get(key)
        if r is None:
            return False
        self.routes[key] = h = replace(r, stale=True, held=True)
        self._index(h)
        return True

    def held_of(self, vtep: IPAddress, kind: int | None = TYPE2) -> int:
        return sum(1 for r in self.routes.values() if r.held and r.vtep == vtep and (kind is None or r.kind == kind))

    def sweep_held(self, vtep: IPAddress) -> list[str]:
        """Drop `vtep`'s routes still held (its hold ended; what it advertised again is fresh); the MACs touched."""
        macs = []
        for key in [k for k, r in self.routes.items() if r.held and r.vtep == vtep]:
            if (mac := self.forget(key)) is not None:
                macs.append(mac)
        return macs

    def stale_count(self) -> int:
        return sum(1 for r in self.routes.values() if r.stale)

    def held_count(self) -> int:
        return sum(1 for r in self.routes.values() if r.held)

    def best(self, mac: str) -> EvpnRoute | None:
        """The route that says where `mac` is now (RFC 7432 §15.2 ordering, module docstring)."""
        routes = self.by_mac.get(mac)
        if not routes:
            return None
        return min(routes.values(), key=lambda r: (r.held, not r.sticky, -r.seq, r.stale, r.vtep.version, int(r.vtep)))

    def record(self, mac: str) -> MappingRecord | None:
        """The record the mapping holds for `mac`: a local record unless a remote route still
        advertised with a higher sequence number says the MAC moved away (being sticky gives a
        remote route no precedence over a local record: RFC 7432 §15.2 asks to alert the
        operator, which the backend does); else the best remote route, its IPs taken from the MAC/IP routes of the
        same VTEP (FRR sends a MAC-only route beside each MAC/IP one)."""
        best = self.best(mac)
        local = self.local.get(mac)
        if local is not None and (best is None or best.held or best.seq <= self.local_seq.get(mac, 0)):
            return local
        if best is None:
            return None
        ips = [r.ip for r in self.by_mac[mac].values() if r.vtep == best.vtep and r.ip is not None]
        v4 = sorted(ip for ip in ips if ip.version == 4)
        v6 = sorted((ip for ip in ips if ip.version == 6), key=lambda ip: (ip.is_link_local, ip))
        arp, ndp = (v4[0] if v4 else None), (v6[0] if v6 else None)
        return MappingRecord(mac, Destination.of(best.vtep, self.port), arp=arp, ndp=ndp)

    def seq_for_local(self, mac: str) -> int:
        """The MAC mobility sequence number to advertise a local `mac` with: one past the highest a
        remote VTEP advertised it with (the MAC moved here), else what it had."""
        remote = self.best(mac)
        seq = self.local_seq.get(mac, 0)
        if remote is not None and remote.seq >= seq:
            seq = remote.seq + 1
        self.local_seq[mac] = seq
        return seq

    def flood_list(self) -> list[IPAddress]:
        """VTEPs that sent an IMET route for this VNI: where BUM traffic is replicated to."""
        return sorted({r.vtep for r in self.routes.values() if r.kind == TYPE3}, key=lambda a: (a.version, int(a)))

    def mapping(self) -> Mapping:
        macs: Iterable[str] = set(self.by_mac) | set(self.local)
        return Mapping.of(rec for mac in macs if (rec := self.record(mac)) is not None)

    def routes_of(self, mac: str) -> list[EvpnRoute]:
        return sorted(self.by_mac.get(mac, {}).values(),
                      key=lambda r: (r.held, not r.sticky, -r.seq, r.stale, str(r.vtep), r.rd))
