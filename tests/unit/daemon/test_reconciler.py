from ipaddress import ip_address as ip

from varpd.daemon.reconciler import plan
from varpd_kmod.types import FdbEntry, NeighEntry

A = FdbEntry("de:ad:be:ef:00:01", ip("192.0.2.2"), 4789)
B = FdbEntry("de:ad:be:ef:00:02", ip("192.0.2.3"), 4789)
NA = NeighEntry(ip("10.55.55.3"), "de:ad:be:ef:00:01")
NB = NeighEntry(ip("10.55.55.4"), "de:ad:be:ef:00:02")


def test_equal_states_need_nothing():
    assert not plan([A, B], [NA, NB], {A, B}, {NA, NB})


def test_missing_entries_are_added_and_bogus_ones_removed():
    bogus = FdbEntry("02:00:00:00:00:99", ip("192.0.2.99"), 4789)
    p = plan([A, B], [NA], {A, bogus}, {NA, NB})
    assert p.add_fdb == (B,)
    assert p.del_fdb == (bogus,)
    assert p.add_neigh == ()
    assert p.del_neigh == (NB,)


def test_moved_destination_is_one_replace_not_delete_then_add():
    moved = FdbEntry(A.mac, ip("192.0.2.3"), 4789)
    p = plan([moved], [], {A}, set())
    assert p.add_fdb == (moved,)
    assert p.del_fdb == ()


def test_ip_moved_to_other_mac_is_replaced():
    moved = NeighEntry(NA.ip, B.mac)
    p = plan([], [moved], set(), {NA})
    assert p.add_neigh == (moved,) and p.del_neigh == ()


def test_extra_remote_of_a_wanted_mac_is_removed():
    extra = FdbEntry(A.mac, ip("192.0.2.50"), 4789)
    p = plan([A], [], {A, extra}, set())
    assert p.del_fdb == (extra,)


FLOOD = "00:00:00:00:00:00"
Z2, Z3, Z4 = (FdbEntry(FLOOD, ip(f"192.0.2.{n}"), 4789) for n in (2, 3, 4))


def test_flood_list_is_several_all_zeros_entries_compared_as_a_set():
    assert not plan([A, Z2, Z3], [], {A, Z2, Z3}, set())
    p = plan([A, Z2, Z3, Z4], [], {A, Z2, Z3}, set())
    assert p.add_fdb == (Z4,) and p.del_fdb == ()


def test_a_vtep_gone_from_the_flood_list_is_deleted_alone():
    p = plan([Z2], [], {Z2, Z3, FdbEntry(FLOOD, ip("192.0.2.3"), 8472)}, set())
    assert p.add_fdb == ()
    assert set(p.del_fdb) == {Z3, FdbEntry(FLOOD, ip("192.0.2.3"), 8472)}


def test_point_mode_moving_its_one_default_destination_deletes_the_old_one_at_once():
    # before: the new all-zeros entry was appended and the old one kept until the next pass
    p = plan([Z3], [], {Z2}, set())
    assert p.add_fdb == (Z3,) and p.del_fdb == (Z2,)
