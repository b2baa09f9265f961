"""The EVPN route table: which route says where a MAC is, stale routes, RD/RT derivation (pure)."""
from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address

import pytest

from varpd.model import Destination, MappingRecord
from varpd_plugins.evpn_routes import TYPE2, TYPE3, EvpnRoute, RouteTable, auto_rd, auto_rt, parse_rd, parse_rt

MAC = "02:16:00:00:00:03"


def t2(vtep: str, seq: int = 0, ip: str | None = None, rd: str | None = None, peer: str = "192.0.2.254"):
    return EvpnRoute(TYPE2, rd or f"{vtep}:2", ip_address(vtep), 100, mac=MAC,
                     ip=None if ip is None else ip_address(ip), seq=seq, rts=("65000:100",), peer=peer)


def test_rd_and_rt_are_derived_like_frr_and_parsed():
    assert auto_rd("192.0.2.1", 100) == "192.0.2.1:100"
    assert auto_rd("192.0.2.1", 70000) == f"192.0.2.1:{70000 & 0xFFFF}"
    assert auto_rt(65000, 100) == "65000:100"
    assert parse_rd("192.0.2.1:100") == ("ip", "192.0.2.1", 100)
    assert parse_rd("65000:100") == ("as2", 65000, 100)
    assert parse_rd("4200000000:7") == ("as4", 4200000000, 7)
    assert parse_rt("65000:100") == (65000, 100)
    for bad in ("x", "192.0.2.1:70000", "a:1", "1:"):
        with pytest.raises(ValueError):
            parse_rd(bad)
    with pytest.raises(ValueError):
        parse_rt("70000:1")


def test_mac_ip_routes_of_one_vtep_make_one_record():
    table = RouteTable(local_ip=ip_address("192.0.2.1"))
    for r in (t2("192.0.2.2"), t2("192.0.2.2", ip="10.66.0.3"), t2("192.0.2.2", ip="fe80::3"),
              t2("192.0.2.2", ip="2001:db8:66::3")):
        assert table.learn(r) == MAC
    rec = table.record(MAC)
    assert rec == MappingRecord(MAC, Destination(ip_address("192.0.2.2"), 4789), arp=ip_address("10.66.0.3"),
                                ndp=ip_address("2001:db8:66::3"))  # a global address beats the link-local
    assert table.mapping().by_ip[ip_address("10.66.0.3")] == rec


def test_a_move_is_ordered_by_sequence_number_and_a_late_withdrawal_changes_nothing():
    table = RouteTable(local_ip=ip_address("192.0.2.1"))
    old, new = t2("192.0.2.2", seq=0), t2("192.0.2.3", seq=1)
    table.learn(new)  # the fresher route arrives first
    table.learn(old)
    assert table.record(MAC).dest.ip == ip_address("192.0.2.3")
    table.forget(old.key)  # the old location's late withdrawal
    assert table.record(MAC).dest.ip == ip_address("192.0.2.3")
    table.learn(t2("192.0.2.2", seq=2))  # moved back
    assert table.record(MAC).dest.ip == ip_address("192.0.2.2")


def test_equal_sequence_numbers_pick_a_fresh_route_then_the_lowest_vtep():
    table = RouteTable()
    table.learn(t2("192.0.2.9"))
    table.learn(t2("192.0.2.3"))
    assert table.best(MAC).vtep == ip_address("192.0.2.3")
    table.mark_stale("192.0.2.254")
    table.learn(t2("192.0.2.9", peer="192.0.2.253"))
    assert table.best(MAC).vtep == ip_address("192.0.2.9")


def test_own_routes_coming_back_are_not_learned_and_local_records_win_until_a_higher_seq():
    local = ip_address("192.0.2.1")
    table = RouteTable(local_ip=local)
    assert table.learn(t2("192.0.2.1")) is None and not table.routes
    rec = MappingRecord(MAC, Destination(local, 4789))
    table.local = {MAC: rec}
    assert table.seq_for_local(MAC) == 0
    table.learn(t2("192.0.2.2", seq=0))
    assert table.record(MAC) == rec
    table.learn(t2("192.0.2.2", seq=1))  # it moved away with a higher number
    assert table.record(MAC).dest.ip == ip_address("192.0.2.2")
    assert table.seq_for_local(MAC) == 2  # coming back here: one past the remote's


def test_stale_routes_are_kept_until_swept_and_a_refresh_clears_the_mark():
    table = RouteTable()
    a, b = t2("192.0.2.2"), EvpnRoute(TYPE2, "192.0.2.3:2", ip_address("192.0.2.3"), 100, mac="02:00:00:00:00:09",
                                      rts=("65000:100",), peer="192.0.2.254")
    table.learn(a)
    table.learn(b)
    assert table.mark_stale("192.0.2.254") == 2 and table.stale_count() == 2
    assert table.record(MAC) is not None  # still served
    table.learn(a)  # sent again after the session came back
    assert table.sweep_stale("192.0.2.254") == ["02:00:00:00:00:09"]
    assert table.record(MAC) is not None and table.record("02:00:00:00:00:09") is None


def test_imet_routes_make_the_flood_list():
    table = RouteTable(local_ip=ip_address("192.0.2.1"))
    for vtep in ("192.0.2.3", "192.0.2.2", "192.0.2.1"):
        table.learn(EvpnRoute(TYPE3, f"{vtep}:2", ip_address(vtep), 100, rts=("65000:100",), peer="192.0.2.254"))
    assert table.flood_list() == [ip_address("192.0.2.2"), ip_address("192.0.2.3")]
    table.forget((TYPE3, "192.0.2.2:2", ip_address("192.0.2.2")))
    assert table.flood_list() == [ip_address("192.0.2.3")]


def imet(vtep: str, peer: str = "192.0.2.254") -> EvpnRoute:
    return EvpnRoute(TYPE3, f"{vtep}:2", ip_address(vtep), 100, rts=("65000:100",), peer=peer)


def test_a_sticky_route_is_not_displaced_by_a_higher_sequence_number_from_another_vtep():
    """RFC 7432 §15.2: a static MAC cannot move; a non-sticky route for it elsewhere, even with a
    higher sequence number, loses; among sticky routes the usual order applies."""
    table = RouteTable()
    table.learn(replace(t2("192.0.2.9"), sticky=True))
    table.learn(t2("192.0.2.3", seq=5))
    assert table.record(MAC).dest.ip == ip_address("192.0.2.9")
    assert [r.vtep for r in table.routes_of(MAC)] == [ip_address("192.0.2.9"), ip_address("192.0.2.3")]
    table.learn(replace(t2("192.0.2.4", seq=1), sticky=True))
    assert table.record(MAC).dest.ip == ip_address("192.0.2.4")
    table.forget(t2("192.0.2.4").key)
    table.forget(t2("192.0.2.9").key)
    assert table.record(MAC).dest.ip == ip_address("192.0.2.3")  # the sticky ones withdrawn


def test_a_remote_sticky_route_does_not_take_a_local_records_place():
    local = ip_address("192.0.2.1")
    table = RouteTable(local_ip=local)
    rec = MappingRecord(MAC, Destination(local, 4789))
    table.local = {MAC: rec}
    table.learn(replace(t2("192.0.2.2"), sticky=True))
    assert table.record(MAC) == rec


def test_held_routes_are_stale_lose_to_any_advertised_route_and_go_with_their_vtep():
    table = RouteTable()
    v3, v2 = "192.0.2.3", "192.0.2.2"
    for r in (t2(v3, seq=4), t2(v3, seq=4, ip="10.66.0.3"), imet(v3)):
        table.learn(r)
    assert table.hold(t2(v3).key) and table.hold(t2(v3, ip="10.66.0.3").key) and table.hold(imet(v3).key)
    assert not table.hold(t2(v2).key)  # unknown
    assert table.stale_count() == table.held_count() == 3
    assert table.record(MAC).arp == ip_address("10.66.0.3") and table.flood_list() == [ip_address(v3)]  # kept
    assert table.sweep_stale("192.0.2.254") == [] and table.held_count() == 3  # not the session's
    table.learn(t2(v2, seq=0))  # the MAC advertised elsewhere, even with a lower number: it is there
    assert table.record(MAC).dest.ip == ip_address(v2)
    assert table.held_of(ip_address(v3)) == 0 and table.held_of(ip_address(v3), None) == 1  # superseded
    assert table.sweep_held(ip_address(v3)) == [] and table.flood_list() == []


def test_a_held_route_advertised_again_by_its_vtep_is_fresh_and_survives_the_sweep():
    table = RouteTable()
    v3 = ip_address("192.0.2.3")
    for r in (t2("192.0.2.3"), t2("192.0.2.3", ip="10.66.0.3")):
        table.learn(r)
        table.hold(r.key)
    table.learn(t2("192.0.2.3"))  # back, without the MAC/IP route (the IP went while it was down)
    assert table.held_of(v3) == 1 and table.record(MAC).arp == ip_address("10.66.0.3")
    assert table.sweep_held(v3) == [MAC]
    assert table.record(MAC) == MappingRecord(MAC, Destination(v3, 4789)) and table.stale_count() == 0


def test_a_held_remote_route_leaves_a_local_record_in_place():
    local = ip_address("192.0.2.1")
    table = RouteTable(local_ip=local)
    rec = MappingRecord(MAC, Destination(local, 4789))
    table.learn(t2("192.0.2.2", seq=3))
    table.hold(t2("192.0.2.2").key)
    table.local = {MAC: rec}
    assert table.record(MAC) == rec
