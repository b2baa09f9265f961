"""The flood list of an overlay (vxlan/flood = replicate) and the settings that refuse what cannot work."""
from __future__ import annotations

from ipaddress import ip_address as ip

import pytest

from varpd.backend.errors import PropertyError
from varpd.daemon.flooding import device_flags, flooding_for
from varpd.model import Destination
from varpd_kmod.types import FdbEntry

LOCAL = Destination(ip("192.0.2.1"), 4789)
ZERO = "00:00:00:00:00:00"


def fl(**values):
    return flooding_for({"vxlan/flood": "replicate", **values}, LOCAL, "push", "br0")


def test_one_entry_per_distinct_remote_vtep_never_this_host():
    f = fl(**{"vxlan/flood_peers": "192.0.2.9, 192.0.2.2:8472 192.0.2.9"})
    wanted = [FdbEntry("de:ad:be:ef:00:01", ip("192.0.2.2"), 4789), FdbEntry("de:ad:be:ef:00:02", ip("192.0.2.2"), 4789),
              FdbEntry("de:ad:be:ef:00:03", ip("192.0.2.1"), 4789), FdbEntry("de:ad:be:ef:00:04", ip("2001:db8::4"), 4789),
              FdbEntry(ZERO, ip("192.0.2.77"), 4789)]
    vteps = {Destination(e.dst, e.port) for e in wanted if e.mac != ZERO}  # what the strategy counts
    got = f.flood_list(vteps, [Destination(ip("192.0.2.3"), 4789), Destination(ip("192.0.2.1"), 4789)])
    assert [(str(e.dst), e.port) for e in got] == [("192.0.2.2", 4789), ("192.0.2.2", 8472), ("192.0.2.3", 4789),
                                                   ("192.0.2.9", 4789)]
    assert all(e.mac == ZERO for e in got)


def test_none_keeps_todays_device_and_no_list():
    assert flooding_for({"vxlan/flood": "none"}, LOCAL, "on-demand", None) is None
    assert device_flags(False, None) == {"proxy": True, "l2miss": True, "l3miss": True, "neigh_suppress": False}
    assert device_flags(False, fl()) == {"proxy": False, "l2miss": False, "l3miss": False, "neigh_suppress": True}


@pytest.mark.parametrize("values, mode, bridge, field, words", [
    ({"vxlan/flood": "none", "vxlan/flood_peers": "192.0.2.9"}, "push", "br0", "vxlan/flood_peers", "needs"),
    ({"vxlan/flood": "replicate"}, "on-demand", "br0", "vxlan/flood", "push mode"),
    ({"vxlan/flood": "replicate"}, "point", "br0", "vxlan/flood", "push mode"),
    ({"vxlan/flood": "replicate"}, "push", None, "vxlan/flood", "bridge"),
    ({"vxlan/flood": "replicate", "vxlan/flood_peers": "192.0.2.9,bogus"}, "push", "br0", "vxlan/flood_peers", "bogus"),
    ({"vxlan/flood": "replicate", "vxlan/flood_peers": "drop"}, "push", "br0", "vxlan/flood_peers", "drop"),
    ({"vxlan/flood": "replicate", "vxlan/flood_peers": "[2001:db8::9]:4789"}, "push", "br0", "vxlan/flood_peers",
     "family"),
    ({"vxlan/flood": "replicate", "vxlan/flood_peers": "224.0.0.5"}, "push", "br0", "vxlan/flood_peers", "224.0.0.5"),
])
def test_what_cannot_work_is_refused_naming_the_property(values, mode, bridge, field, words):
    with pytest.raises(PropertyError) as exc:
        flooding_for(values, LOCAL, mode, bridge)
    assert exc.value.name == field and words in str(exc.value), str(exc.value)


class _Stub:
    """The runtime as flooding.sync sees it: a strategy's wanted FDB, a backend's flood peers."""

    def __init__(self, wanted, peers):
        import asyncio

        from varpd.daemon import flooding as fl_mod
        from varpd.daemon.modes import ModeStrategy

        self.flooding = fl_mod.Flooding(LOCAL)
        self.wanted, self.peers = list(wanted), set(peers)
        self.strategy = type("S", (ModeStrategy,), {"wanted": lambda s: (self.wanted, ())})(self)
        self.backend = type("B", (), {"flood_peers": lambda s: frozenset(self.peers)})()
        self.tables, self.origin, self._lock, self.programmed = object(), {}, asyncio.Lock(), []

    async def _program(self, add_fdb=(), del_fdb=()):
        self.programmed.append(([str(e.dst) for e in add_fdb], [str(e.dst) for e in del_fdb]))


async def test_sync_programs_only_the_difference_when_vteps_come_and_go():
    from varpd.daemon import flooding as fl_mod

    rt = _Stub([FdbEntry("de:ad:be:ef:00:01", ip("192.0.2.2"), 4789)], [])
    await fl_mod.sync(rt)
    rt.peers.add(Destination(ip("192.0.2.7"), 4789))  # e.g. an EVPN type-3 route arrived
    await fl_mod.sync(rt)
    rt.wanted.clear()  # the last record on 192.0.2.2 went
    await fl_mod.sync(rt)
    await fl_mod.sync(rt)  # nothing changed: nothing programmed
    assert rt.programmed == [(["192.0.2.2"], []), (["192.0.2.7"], []), ([], ["192.0.2.2"])]
    assert fl_mod.describe(rt) == ["192.0.2.7:4789"] and rt.origin[ZERO] == "flood"
