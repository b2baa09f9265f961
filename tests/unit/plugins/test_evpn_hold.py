"""The VTEP-loss hold's decisions, with times passed in (pure: varpd_plugins.evpn_hold)."""
from __future__ import annotations

from ipaddress import ip_address

from varpd_plugins.evpn_hold import DONE, FORGET, HELD, SETTLE, WAIT, VtepHold
from varpd_plugins.evpn_routes import TYPE2, TYPE3, EvpnRoute, RouteTable

V = ip_address("192.0.2.3")


def table_with(*macs: str) -> tuple[RouteTable, list[tuple], tuple]:
    table = RouteTable()
    keys = []
    for mac in macs:
        r = EvpnRoute(TYPE2, "192.0.2.3:2", V, 100, mac=mac, rts=("65000:100",), peer="192.0.2.254")
        table.learn(r)
        keys.append(r.key)
    imet = EvpnRoute(TYPE3, "192.0.2.3:2", V, 100, rts=("65000:100",), peer="192.0.2.254")
    table.learn(imet)
    return table, keys, imet.key


def test_type2_withdrawals_wait_the_window_and_are_held_if_the_imet_follows_within_it():
    table, (a, b), imet = table_with("02:00:00:00:00:01", "02:00:00:00:00:02")
    hold = VtepHold(table, hold=10)
    assert hold.withdrawal(a, when=0.0, now=0.1) == WAIT
    assert hold.withdrawal(imet, when=0.3, now=0.4) == HELD and hold.started == [V]
    assert hold.withdrawal(a, when=0.0, now=0.45) == HELD  # came before the IMET's, within the window
    assert hold.withdrawal(b, when=3.0, now=3.1) == HELD  # after it: the VTEP is gone
    assert hold.withdrawal(b, when=3.0, now=3.2) == DONE  # already held
    assert hold.tick(5.0) == (set(), []) and table.held_count() == 3
    touched, done = hold.tick(10.4)
    assert touched == {"02:00:00:00:00:01", "02:00:00:00:00:02"} and done == [(V, "expired", 3)]
    assert not table.routes and not hold.lost and not hold.ends


def test_a_type2_withdrawn_long_before_the_imet_was_a_deleted_vnic():
    table, (a, _), _ = table_with("02:00:00:00:00:01", "02:00:00:00:00:02")
    hold = VtepHold(table, hold=10)
    assert hold.withdrawal(a, when=0.0, now=SETTLE + 0.01) == FORGET


def test_an_imet_withdrawn_alone_is_removed_after_the_window_and_a_return_ends_the_loss():
    table, (a,), imet = table_with("02:00:00:00:00:01")
    hold = VtepHold(table, hold=10)
    assert hold.withdrawal(imet, when=0.0, now=0.1) == HELD
    assert hold.tick(0.1 + SETTLE / 2) == (set(), [])
    assert hold.tick(0.1 + SETTLE) == (set(), [(V, "imet-only", 1)]) and table.flood_list() == []
    assert a in table.routes and not table.routes[a].held
    table.learn(EvpnRoute(TYPE3, "192.0.2.3:2", V, 100, rts=("65000:100",), peer="192.0.2.254"))
    assert hold.withdrawal(imet, when=1.0, now=1.1) == HELD and hold.withdrawal(a, when=1.0, now=1.1) == HELD
    assert hold.back(V) and not hold.back(V)
    assert hold.withdrawal(a, when=2.0, now=2.1) == DONE  # still held: nothing to do
    table.learn(EvpnRoute(TYPE2, "192.0.2.3:2", V, 100, mac="02:00:00:00:00:01", rts=("65000:100",),
                          peer="192.0.2.254"))  # advertised again, then withdrawn after the VTEP's return:
    assert hold.withdrawal(a, when=2.0, now=2.1) == WAIT  # it waits the window like any deleted VNIC


def test_hold_0_applies_every_withdrawal():
    table, (a,), imet = table_with("02:00:00:00:00:01")
    hold = VtepHold(table, hold=0)
    assert hold.withdrawal(imet, when=0.0, now=0.0) == FORGET and hold.withdrawal(a, when=0.0, now=0.0) == FORGET
