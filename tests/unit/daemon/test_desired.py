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
