"""What the safety pass's check compares the kernel with (KernelSync._wanted_tally): counted from
the mode's wanted entries with the overrides laid over, again only when either changed; the FDB
part a GET per MAC can see leaves out the appended MACs (flood list, multicast)."""
from __future__ import annotations

from ipaddress import IPv4Address
from types import SimpleNamespace

from varpd.daemon import kernel_sync
from varpd.daemon.kernel_sync import KernelSync
from varpd_kmod.tablecheck import FDB_KEY, NEIGH_KEY, tally_of
from varpd_kmod.types import FdbEntry, NeighEntry

UNICAST = [FdbEntry(f"02:00:00:00:00:{i:02x}", IPv4Address("192.0.2.2"), 4789) for i in range(10)]
APPENDED = [FdbEntry("00:00:00:00:00:00", IPv4Address("192.0.2.3"), 4789),
            FdbEntry("01:00:5e:00:00:01", IPv4Address("192.0.2.4"), 4789)]
NEIGH = [NeighEntry(IPv4Address("10.0.0.1") + i, e.mac) for i, e in enumerate(UNICAST)]


class Strategy:
    def __init__(self) -> None:
        self.version, self.counted = 0, 0

    def wanted(self):
        self.counted += 1
        return iter(UNICAST + APPENDED), iter(NEIGH)

    def wanted_version(self) -> int:
        return self.version


def sync() -> KernelSync:
    s = KernelSync.__new__(KernelSync)  # only the counting half: no device, no tasks
    s.rt = SimpleNamespace(strategy=Strategy(), overrides={})
    s._wanted_cache = None
    return s


async def test_what_is_wanted_is_counted_again_only_when_it_changed(monkeypatch):
    monkeypatch.setattr(kernel_sync, "DUMP_FDB_MAX", 1)  # keep the MACs a GET per MAC needs
    s = sync()
    want = await s._wanted_tally(0)
    assert want.fdb.same(await tally_of(UNICAST + APPENDED, FDB_KEY))
    assert want.fdb_single.same(await tally_of(UNICAST, FDB_KEY))
    assert want.macs == b"".join(bytes.fromhex(e.mac.replace(":", "")) for e in UNICAST)
    assert want.neigh.same(await tally_of(NEIGH, NEIGH_KEY))
    assert await s._wanted_tally(0) is want and s.rt.strategy.counted == 1
    s.rt.strategy.version = 1
    assert await s._wanted_tally(1) is not want and s.rt.strategy.counted == 2
    s.rt.overrides["02:00:00:00:00:01"] = None  # dropped by hand: neither its FDB nor neighbour entry
    dropped = await s._wanted_tally(1)
    assert s.rt.strategy.counted == 3 and dropped.fdb.count == len(UNICAST + APPENDED) - 1
    assert dropped.neigh.count == len(NEIGH) - 1


async def test_below_the_dump_limit_no_macs_are_kept():
    want = await sync()._wanted_tally(0)
    assert want.macs == b"" and want.fdb_single.count == len(UNICAST)
