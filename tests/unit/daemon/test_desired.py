from ipaddress import IPv4Address, IPv6Address, ip_address as ip

from varpd.daemon.desired import DesiredState
from varpd.model import Destination, Mapping, MappingRecord

LOCAL = Destination(ip("192.0.2.1"), 4789)


def rec(n: int, host: int, port: int = 4789) -> MappingRecord:
    return MappingRecord(
        mac=f"de:ad:be:ef:00:{n:02x}",
        dest=Destination(ip(f"192.0.2.{host}"), port),
        arp=IPv4Address(f"10.55.55.{n + 2}"),
        ndp=IPv6Address(f"fe80::{n + 3}"),
    )


def test_local_records_are_never_programmed():
    d = DesiredState(LOCAL)
    d.load(Mapping.of([rec(0, 1), rec(1, 2), rec(2, 3)]))
    assert set(d.fdb) == {"de:ad:be:ef:00:01", "de:ad:be:ef:00:02"}
    assert IPv4Address("10.55.55.2") not in d.neigh and IPv6Address("fe80::3") not in d.neigh
    assert len(d.neigh) == 4


def test_change_applies_only_the_difference():
    old = Mapping.of([rec(0, 1), rec(1, 2), rec(2, 3)])
    d = DesiredState(LOCAL)
    d.load(old)
    new = Mapping.of([rec(0, 1), rec(1, 2, port=4790), rec(3, 3)])
    add_f, add_n, del_f, del_n = d.apply(old.diff(new))
    assert {e.mac for e in add_f} == {"de:ad:be:ef:00:01", "de:ad:be:ef:00:03"}
    assert [e.mac for e in del_f] == ["de:ad:be:ef:00:02"]
    assert {e.ip for e in del_n} == {IPv4Address("10.55.55.4"), IPv6Address("fe80::5")}
    assert d.fdb["de:ad:be:ef:00:01"].port == 4790


def test_record_moving_here_is_withdrawn():
    old = Mapping.of([rec(1, 2)])
    d = DesiredState(LOCAL)
    d.load(old)
    _, _, del_f, del_n = d.apply(old.diff(Mapping.of([rec(1, 1)])))
    assert [e.mac for e in del_f] == ["de:ad:be:ef:00:01"]
    assert len(del_n) == 2 and not d.neigh


def test_other_family_underlay_is_skipped_and_counted():
    d = DesiredState(LOCAL)
    d.load(Mapping.of([MappingRecord("de:ad:be:ef:00:09", Destination(ip("2001:db8::9"), 4789))]))
    assert not d.fdb and d.skipped == 1


def _vteps(d: DesiredState) -> set[str]:
    return {str(v) for v in d.remote_vteps()}


def test_remote_vteps_follow_adds_removes_and_moves_without_a_walk():
    """The flood list's share (vxlan/flood=replicate): each remote VTEP of our family once,
    counted as changes are applied, equal after each step to a count of the table afresh."""
    v6 = MappingRecord("de:ad:be:ef:00:09", Destination(ip("2001:db8::9"), 4789))
    old = Mapping.of([rec(0, 1), rec(1, 2), rec(2, 2), rec(3, 3), v6])
    d = DesiredState(LOCAL)
    d.load(old)
    assert _vteps(d) == {"192.0.2.2:4789", "192.0.2.3:4789"} and d.skipped == 1
    steps = [
        [rec(0, 1), rec(1, 2), rec(2, 2), v6],  # the last record on .3 removed: .3 leaves
        [rec(0, 1), rec(1, 4), rec(2, 2), v6],  # one of two on .2 moves to .4: .2 stays, .4 joins
        [rec(0, 1), rec(1, 4), rec(2, 1), v6],  # the other moves here (local): .2 leaves
        [rec(0, 5), rec(1, 4), rec(2, 1, port=8472), v6],  # the local one leaves for .5; one changes port
        [rec(0, 5), rec(1, 4), rec(2, 4, port=8472), rec(7, 4), v6],  # an add on a known VTEP
    ]
    want = [{"192.0.2.2:4789"}, {"192.0.2.2:4789", "192.0.2.4:4789"}, {"192.0.2.4:4789"},
            {"192.0.2.4:4789", "192.0.2.5:4789"}, {"192.0.2.4:4789", "192.0.2.4:8472", "192.0.2.5:4789"}]
    for records, expected in zip(steps, want):
        new = Mapping.of(records)
        d.apply(old.diff(new), new)
        assert _vteps(d) == expected
        fresh = DesiredState(LOCAL)
        fresh.load(new)
        assert _vteps(fresh) == expected and sorted(d._dests) == sorted(fresh._dests)
        assert {str(e.dst) for e in d.fdb.values()} == {v.split(":")[0] for v in expected}
        old = new
    d.apply(old.diff(Mapping()), Mapping())
    assert _vteps(d) == set() and d._dests == {}


async def test_a_loaded_table_is_counted_in_slices_that_give_the_loop_turns(monkeypatch):
    import asyncio

    from varpd.daemon import desired

    monkeypatch.setattr(desired, "COUNT_SLICE", 0.0)
    d = DesiredState(LOCAL)
    d.load(Mapping.of([MappingRecord(f"de:ad:be:ef:{i >> 8:02x}:{i & 255:02x}", Destination(ip(f"192.0.2.{2 + i % 7}"),
                                                                                           4789)) for i in range(5000)]))
    turns = 0

    async def other():
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    task = asyncio.get_running_loop().create_task(other())
    assert await d.count() is True and await d.count() is False
    task.cancel()
    assert turns >= 3 and len(d.remote_vteps()) == 7  # a turn every 1024 records at least
