"""The EVPN route table: which route says where a MAC is, stale routes, RD/RT derivation (pure)."""
from __future__ import annotations

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
