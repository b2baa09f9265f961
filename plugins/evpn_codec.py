"""GoBGP API paths ⇄ EvpnRoute: the only code that knows the protobuf shapes of EVPN routes.

Received paths are decoded from the messages gobgpd sends (NLRI, MP_REACH next hop, extended
communities, PMSI tunnel); this host's routes are built the way FRR builds its own: origin
IGP, next hop the VTEP, route target ASN:VNI, BGP encapsulation VXLAN, label = VNI, and for type 3
a PMSI tunnel attribute of type ingress replication naming the VTEP (RFC 8365 §5.1.3, §8.3).
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from google.protobuf.any_pb2 import Any as PbAny

from varpd.model import IPAddress, MappingRecord

from varpd_plugins.evpn_routes import (PMSI_INGRESS_REPLICATION, RT_SUBTYPE, TUNNEL_VXLAN, TYPE2, TYPE3,
                                       EvpnRoute, parse_rd, parse_rt)

_NONE = ("", "<nil>")


def _pack(msg: Any) -> PbAny:
    out = PbAny()
    out.Pack(msg)
    return out


_CLASSES: dict[str, Any] = {}


def _unpack(api: Any, packed: PbAny) -> Any:
    """The message inside an Any (parsed straight from its bytes: Any.Unpack's checks cost a third
    of the decoding time of a 10k-route flood); None for a type the stubs do not have."""
    cls = _CLASSES.get(packed.type_url)
    if cls is None:
        cls = getattr(api.attrs, packed.type_url.rpartition(".")[2], None)
        if cls is None:
            return None
        _CLASSES[packed.type_url] = cls
    return cls.FromString(packed.value)


def evpn_family(api: Any) -> Any:
    return api.pb.Family(afi=api.pb.Family.AFI_L2VPN, safi=api.pb.Family.SAFI_EVPN)


def _rd_text(api: Any, packed: PbAny) -> str:
    rd = _unpack(api, packed)
    return "" if rd is None else f"{rd.admin}:{rd.assigned}"


def _rd_message(api: Any, text: str) -> PbAny:
    kind, admin, number = parse_rd(text)
    cls = {"ip": api.attrs.RouteDistinguisherIPAddress, "as2": api.attrs.RouteDistinguisherTwoOctetASN,
           "as4": api.attrs.RouteDistinguisherFourOctetASN}[kind]
    return _pack(cls(admin=admin, assigned=number))


@functools.lru_cache(maxsize=65536)  # next hops repeat: one parse per VTEP
def _ip(text: str) -> IPAddress | None:
    if text in _NONE:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def decode(api: Any, path: Any) -> EvpnRoute | None:
    """An EVPN type-2 or type-3 path as an EvpnRoute (withdrawals too: their key is what counts);
    None for other route types, and for a route without a usable next hop."""
    nlri = _unpack(api, path.nlri)
    name = type(nlri).__name__
    if name not in ("EVPNMACIPAdvertisementRoute", "EVPNInclusiveMulticastEthernetTagRoute"):
        return None
    next_hop, rts, seq, sticky, pmsi_label = None, [], 0, False, 0
    for packed in path.pattrs:
        attr = _unpack(api, packed)
        kind = type(attr).__name__
        if kind == "MpReachNLRIAttribute" and attr.next_hops:
            next_hop = _ip(attr.next_hops[0])
        elif kind == "NextHopAttribute":
            next_hop = next_hop or _ip(attr.next_hop)
        elif kind == "ExtendedCommunitiesAttribute":
            for c in attr.communities:
                ec = _unpack(api, c)
                ec_kind = type(ec).__name__
                if ec_kind == "TwoOctetAsSpecificExtended" and ec.sub_type == RT_SUBTYPE:
                    rts.append(f"{ec.asn}:{ec.local_admin}")
                elif ec_kind == "FourOctetAsSpecificExtended" and ec.sub_type == RT_SUBTYPE:
                    rts.append(f"{ec.asn}:{ec.local_admin}")
                elif ec_kind == "MacMobilityExtended":
                    seq, sticky = ec.sequence_num, ec.is_sticky
        elif kind == "PmsiTunnelAttribute":
            pmsi_label = attr.label
    peer = "" if path.neighbor_ip in _NONE else path.neighbor_ip
    rd = _rd_text(api, nlri.rd)
    if name == "EVPNMACIPAdvertisementRoute":
        vtep = next_hop or ipaddress.ip_address("0.0.0.0")
        return EvpnRoute(TYPE2, rd, vtep, nlri.labels[0] if nlri.labels else 0, mac=nlri.mac_address.lower(),
                         ip=_ip(nlri.ip_address), seq=seq, rts=tuple(rts), peer=peer, sticky=sticky)
    origin = _ip(nlri.ip_address) or next_hop or ipaddress.ip_address("0.0.0.0")
    return EvpnRoute(TYPE3, rd, origin, pmsi_label, rts=tuple(rts), peer=peer)


def _attrs(api: Any, vtep: IPAddress, rt: str, seq: int = 0, sticky: bool = False) -> list[PbAny]:
    asn, number = parse_rt(rt)
    communities = [_pack(api.attrs.TwoOctetAsSpecificExtended(is_transitive=True, sub_type=RT_SUBTYPE, asn=asn,
                                                              local_admin=number)),
                   _pack(api.attrs.EncapExtended(tunnel_type=TUNNEL_VXLAN))]
    if seq or sticky:
        communities.append(_pack(api.attrs.MacMobilityExtended(is_sticky=sticky, sequence_num=seq)))
    return [_pack(api.attrs.OriginAttribute(origin=0)), _pack(api.attrs.NextHopAttribute(next_hop=str(vtep))),
            _pack(api.attrs.ExtendedCommunitiesAttribute(communities=communities))]


def mac_ip_paths(api: Any, rec: MappingRecord, *, rd: str, rt: str, vni: int, seq: int,
                 sticky: bool = False) -> list[Any]:
    """The type-2 routes of one local record: MAC only, and one per IP (as FRR sends them);
    `sticky` sets the MAC mobility community's static flag (this host never does: hosts.json
    has no way to say a VNIC is static; the tests play a remote VTEP with it)."""
    out = []
    for ip in (None, rec.arp, rec.ndp):
        if ip is None and out:
            continue
        nlri = api.attrs.EVPNMACIPAdvertisementRoute(
            rd=_rd_message(api, rd), esi=api.attrs.EthernetSegmentIdentifier(type=0, value=bytes(9)),
            ethernet_tag=0, mac_address=rec.mac, ip_address="" if ip is None else str(ip), labels=[vni])
        out.append(api.pb.Path(nlri=_pack(nlri), pattrs=_attrs(api, rec.dest.ip, rt, seq, sticky), family=evpn_family(api)))
    return out


def imet_path(api: Any, vtep: IPAddress, *, rd: str, rt: str, vni: int) -> Any:
    """The type-3 route saying this VTEP takes BUM traffic of the VNI by ingress replication."""
    nlri = api.attrs.EVPNInclusiveMulticastEthernetTagRoute(rd=_rd_message(api, rd), ethernet_tag=0,
                                                            ip_address=str(vtep))
    attrs = _attrs(api, vtep, rt)
    attrs.append(_pack(api.attrs.PmsiTunnelAttribute(flags=0, type=PMSI_INGRESS_REPLICATION, label=vni,
                                                      id=vtep.packed)))
    return api.pb.Path(nlri=_pack(nlri), pattrs=attrs, family=evpn_family(api))
