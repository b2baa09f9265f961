import asyncio
from ipaddress import ip_address as ip

from varpd.daemon import reconciler
from varpd.daemon.reconciler import plan, plan_async
from varpd_kmod.types import FdbEntry, NeighEntry

A = FdbEntry("de:ad:be:ef:00:01", ip("192.0.2.2"), 4789)
B = FdbEntry("de:ad:be:ef:00:02", ip("192.0.2.3"), 4789)
NA = NeighEntry(ip("10.55.55.3"), "de:ad:be:ef:00:01")
NB = NeighEntry(ip("10.55.55.4"), "de:ad:be:ef:00:02")


def mine(*entries) -> dict:
    """Kernel entries carrying varpd's mark."""
    return dict.fromkeys(entries, True)


def others(*entries) -> dict:
    """Kernel entries someone else added (another protocol, or none)."""
    return dict.fromkeys(entries, False)


def test_equal_states_need_nothing():
    assert not plan([A, B], [NA, NB], mine(A, B), mine(NA, NB))


def test_missing_entries_are_added_and_bogus_ones_removed():
    bogus = FdbEntry("02:00:00:00:00:99", ip("192.0.2.99"), 4789)
    p = plan([A, B], [NA], mine(A, bogus), mine(NA, NB))
    assert p.add_fdb == (B,)
    assert p.del_fdb == (bogus,)
    assert p.add_neigh == ()
    assert p.del_neigh == (NB,)


def test_moved_destination_is_one_replace_not_delete_then_add():
    moved = FdbEntry(A.mac, ip("192.0.2.3"), 4789)
    p = plan([moved], [], mine(A), {})
    assert p.add_fdb == (moved,)
    assert p.del_fdb == ()


def test_ip_moved_to_other_mac_is_replaced():
    moved = NeighEntry(NA.ip, B.mac)
    p = plan([], [moved], {}, mine(NA))
    assert p.add_neigh == (moved,) and p.del_neigh == ()


def test_extra_remote_of_a_wanted_mac_is_removed():
    extra = FdbEntry(A.mac, ip("192.0.2.50"), 4789)
    p = plan([A], [], mine(A, extra), {})
    assert p.del_fdb == (extra,)


FLOOD = "00:00:00:00:00:00"
Z2, Z3, Z4 = (FdbEntry(FLOOD, ip(f"192.0.2.{n}"), 4789) for n in (2, 3, 4))


def test_flood_list_is_several_all_zeros_entries_compared_as_a_set():
    assert not plan([A, Z2, Z3], [], mine(A, Z2, Z3), {})
    p = plan([A, Z2, Z3, Z4], [], mine(A, Z2, Z3), {})
    assert p.add_fdb == (Z4,) and p.del_fdb == ()


def test_a_vtep_gone_from_the_flood_list_is_deleted_alone():
    p = plan([Z2], [], mine(Z2, Z3, FdbEntry(FLOOD, ip("192.0.2.3"), 8472)), {})
    assert p.add_fdb == ()
    assert set(p.del_fdb) == {Z3, FdbEntry(FLOOD, ip("192.0.2.3"), 8472)}


def test_point_mode_moving_its_one_default_destination_deletes_the_old_one_at_once():
    # before: the new all-zeros entry was appended and the old one kept until the next pass
    p = plan([Z3], [], mine(Z2), {})
    assert p.add_fdb == (Z3,) and p.del_fdb == (Z2,)


def test_entries_of_others_for_keys_not_wanted_survive():
    hand = FdbEntry("02:00:00:00:00:77", ip("192.0.2.77"), 4789)
    hand_n = NeighEntry(ip("10.55.55.77"), "02:00:00:00:00:77")
    assert not plan([A], [NA], {**mine(A), **others(hand)}, {**mine(NA), **others(hand_n)})


def test_unmarked_wanted_entries_are_taken_over_once():
    """An older varpd's entries (no mark) equal to wanted ones: the FDB one is deleted and added
    again (the kernel keeps a hand-added entry's flags on replace), the neighbour one replaced."""
    p = plan([A], [NA], others(A), others(NA))
    assert p.take_fdb == (A,) and p.add_fdb == () and p.del_fdb == ()
    assert p.add_neigh == (NA,)
    assert not plan([A], [NA], mine(A), mine(NA))  # afterwards: nothing


def test_changed_by_hand_is_taken_back():
    theirs = FdbEntry(A.mac, ip("192.0.2.66"), 4789)
    p = plan([A], [NA], others(theirs), others(NeighEntry(NA.ip, B.mac)))
    assert p.take_fdb == (A,) and p.add_neigh == (NA,) and not p.del_neigh


def test_a_flood_list_someone_else_made_is_left_alone_or_taken_over():
    assert not plan([], [], others(Z2, Z3), {})
    p = plan([Z2, Z4], [], others(Z2, Z3), {})
    assert p.take_fdb == (Z2, Z4) and not p.add_fdb and not p.del_fdb


def test_plan_async_yields_and_agrees(monkeypatch):
    monkeypatch.setattr(reconciler, "BATCH", 3)
    monkeypatch.setattr(reconciler, "SLICE", 0.0)  # a turn at every look at the clock
    want = [FdbEntry(f"02:00:00:00:01:{i:02x}", ip("192.0.2.9"), 4789) for i in range(20)]
    have = mine(*want[5:], FdbEntry("02:00:00:00:02:01", ip("192.0.2.9"), 4789))
    turns = 0

    async def run():
        nonlocal turns

        async def count():
            nonlocal turns
            while True:
                await asyncio.sleep(0)
                turns += 1

        counter = asyncio.ensure_future(count())
        result = await plan_async(want, [], have, {})
        counter.cancel()
        return result

    assert asyncio.run(run()) == plan(want, [], have, {})
    assert turns >= 10  # the loop ran between batches


def test_plan_async_streams_adds_fdb_first_and_keeps_the_rest(monkeypatch):
    """With program=, adds go out in batches as found (a start's million entries are never all held);
    every FDB add (takes included) before the first neighbour, and together they are the plan's."""
    monkeypatch.setattr(reconciler, "BATCH", 2)
    monkeypatch.setattr(reconciler, "STREAM", 3)
    fdb = [FdbEntry(f"02:00:00:00:01:{i:02x}", ip("192.0.2.9"), 4789) for i in range(10)]
    neigh = [NeighEntry(ip(f"10.0.0.{i + 1}"), e.mac) for i, e in enumerate(fdb)]
    stray = FdbEntry("02:00:00:00:02:01", ip("192.0.2.9"), 4789)
    have_f = {**mine(*fdb[:2], stray), **others(fdb[2])}  # fdb[2]: someone else's, taken over
    have_n = mine(neigh[0])
    batches: list = []

    async def program(adds):
        batches.append(adds)

    whole = plan(fdb, neigh, have_f, have_n)
    rest = asyncio.run(plan_async(fdb, neigh, have_f, have_n, program=program))
    assert len(batches) >= 3
    kinds = ["n" if b.add_neigh else "f" for b in batches]
    assert kinds == sorted(kinds)  # every FDB batch before the first neighbour batch
    assert sum(len(b.add_fdb) + len(b.add_neigh) + len(b.take_fdb) for b in batches) > 3
    got_f = [e for b in batches for e in b.add_fdb] + list(rest.add_fdb)
    got_n = [e for b in batches for e in b.add_neigh] + list(rest.add_neigh)
    got_t = [e for b in batches for e in b.take_fdb] + list(rest.take_fdb)
    assert (got_f, got_n, got_t) == (list(whole.add_fdb), list(whole.add_neigh), list(whole.take_fdb))
    assert (rest.del_fdb, rest.del_neigh) == (whole.del_fdb, whole.del_neigh) == ((stray,), ())
