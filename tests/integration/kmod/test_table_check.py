"""The safety pass's check (varpd_kmod.tablecheck) against a real kernel: what the check's tallies
say is what the full pass's dumps hold, and every kind of drift a full pass would repair makes
the check differ, while entries a full pass leaves alone (someone else's) do not."""
from __future__ import annotations

import asyncio
import subprocess
import uuid
from ipaddress import IPv4Address, IPv6Address

import pytest

from varpd_kmod import DeviceSpec, FdbEntry, KernelTables, KmodError, NeighEntry, ensure_overlay
from varpd_kmod.tablecheck import FDB_KEY, NEIGH_KEY, tally_of

from _kmod_helpers import sh

pytestmark = pytest.mark.integration

N = 1500  # several datagrams of each table, so runs of one layout form and break


def wanted(n: int = N) -> tuple[list[FdbEntry], list[NeighEntry]]:
    fdb, neigh = [], []
    for i in range(n):
        mac = "02:31:00:00:%02x:%02x" % (i >> 8, i & 255)
        port = 8472 if 700 <= i < 720 else 4789  # a few with NDA_PORT: another layout inside the dump
        fdb.append(FdbEntry(mac, IPv4Address("192.0.2.0") + (10 + i % 200), port))
        neigh.append(NeighEntry(IPv4Address("10.31.0.0") + i, mac))
        neigh.append(NeighEntry(IPv6Address("2001:db8:31::") + i, mac))
    return fdb, neigh


def macs_of(entries) -> bytes:
    return b"".join(bytes.fromhex(e.mac.replace(":", "")) for e in entries)


@pytest.fixture
async def dev():
    ns = f"pc-chk-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    try:
        h = await ensure_overlay(DeviceSpec("vx0", 42, IPv4Address("192.0.2.1")), netns=ns)
        kt = KernelTables(h.ifindex, netns=ns)
        try:
            fdb, neigh = wanted()
            assert not await kt.add_fdb(fdb) and not await kt.add_neigh(neigh)
            await kt.dump_fdb()  # learns the device's port, as the start pass does
            yield ns, kt, fdb, neigh
        finally:
            kt.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


async def tallies(kt: KernelTables, fdb):
    async with kt.checker() as c:
        return await c.fdb_dump(), await c.fdb_get(macs_of(fdb)), await c.neigh_dump()


async def test_the_check_counts_what_the_full_pass_dumps(dev):
    _ns, kt, fdb, neigh = dev
    dump_f, get_f, have_n = await tallies(kt, fdb)
    want_f, want_n = await tally_of(fdb, FDB_KEY), await tally_of(neigh, NEIGH_KEY)
    assert dump_f.count == get_f.count == N and have_n.count == 2 * N
    assert dump_f.same(want_f) and get_f.same(want_f) and have_n.same(want_n)
    assert not (dump_f.foreign or get_f.foreign or have_n.foreign or get_f.missing)
    # and the same as the full pass's own parse of the dumps
    assert dump_f.same(await tally_of([e for e, own in (await kt.dump_fdb()).items() if own], FDB_KEY))
    assert have_n.same(await tally_of([e for e, own in (await kt.dump_neigh()).items() if own], NEIGH_KEY))


@pytest.mark.parametrize("drift", ["fdb-dst-by-hand", "fdb-deleted", "fdb-port", "neigh-lladdr-marked",
                                   "neigh-deleted", "neigh-unmarked", "neigh-extra-marked", "fdb-extra-marked",
                                   "two-swapped"])
async def test_every_drift_a_full_pass_repairs_makes_the_check_differ(dev, drift):
    ns, kt, fdb, neigh = dev
    want_f, want_n = await tally_of(fdb, FDB_KEY), await tally_of(neigh, NEIGH_KEY)
    a, b = fdb[900], fdb[901]
    ip4 = str(neigh[2 * 900].ip)
    dev_args = ("dev", "vx0")
    if drift == "fdb-dst-by-hand":  # someone's entry in place of varpd's: the full pass takes it back
        sh("bridge", "-n", ns, "fdb", "replace", a.mac, *dev_args, "dst", "192.0.2.250", "self", "permanent")
    elif drift == "fdb-deleted":
        sh("bridge", "-n", ns, "fdb", "del", a.mac, *dev_args, "self")
    elif drift == "fdb-port":  # still varpd's mark, another port
        assert not await kt.add_fdb([FdbEntry(a.mac, a.dst, 4790)])
    elif drift == "neigh-lladdr-marked":
        sh("ip", "-n", ns, "neigh", "replace", ip4, "lladdr", b.mac, *dev_args, "nud", "permanent", "protocol", "118")
    elif drift == "neigh-deleted":
        sh("ip", "-n", ns, "neigh", "del", ip4, *dev_args)
    elif drift == "neigh-unmarked":
        sh("ip", "-n", ns, "neigh", "replace", ip4, "lladdr", a.mac, *dev_args, "nud", "permanent", "protocol", "static")
    elif drift == "neigh-extra-marked":  # a stray of varpd's: the full pass removes it
        sh("ip", "-n", ns, "neigh", "add", "10.32.0.1", "lladdr", a.mac, *dev_args, "nud", "permanent", "protocol", "118")
    elif drift == "fdb-extra-marked":
        sh("bridge", "-n", ns, "fdb", "add", "02:32:00:00:00:01", *dev_args, "dst", "192.0.2.251", "self", "permanent",
           "extern_learn")
    elif drift == "two-swapped":  # each MAC at the other's VTEP: counts and destinations unchanged
        assert not await kt.add_fdb([FdbEntry(a.mac, b.dst, b.port), FdbEntry(b.mac, a.dst, a.port)])
    dump_f, get_f, have_n = await tallies(kt, fdb)
    fdb_same = dump_f.same(want_f) and not any(m in {e.mac for e in fdb} for m in dump_f.foreign)
    get_same = get_f.same(want_f) and not get_f.missing and not get_f.foreign
    neigh_same = have_n.same(want_n) and not any(ip in {n.ip for n in neigh} for ip in have_n.foreign)
    if drift.startswith("neigh"):
        assert not neigh_same and fdb_same and get_same
    elif drift == "fdb-extra-marked":  # the dump sees it; a GET per wanted MAC cannot (KernelSync.check)
        assert not fdb_same and get_same and neigh_same
    else:
        assert not fdb_same and not get_same and neigh_same


async def test_someone_elses_entries_for_keys_varpd_does_not_want_are_only_reported(dev):
    ns, kt, fdb, neigh = dev
    sh("bridge", "-n", ns, "fdb", "add", "02:33:00:00:00:01", "dev", "vx0", "dst", "192.0.2.252", "self", "permanent")
    sh("ip", "-n", ns, "neigh", "add", "10.33.0.1", "lladdr", "02:33:00:00:00:01", "dev", "vx0", "nud", "permanent")
    dump_f, get_f, have_n = await tallies(kt, fdb)
    assert dump_f.same(await tally_of(fdb, FDB_KEY)) and dump_f.foreign == ["02:33:00:00:00:01"]
    assert have_n.same(await tally_of(neigh, NEIGH_KEY)) and have_n.foreign == [IPv4Address("10.33.0.1")]
    assert get_f.same(await tally_of(fdb, FDB_KEY))


async def test_programming_goes_on_while_a_full_pass_dumps(dev):
    """The full pass's dumps have a socket of their own: a drift repair is not held behind them."""
    _ns, kt, fdb, _neigh = dev
    more = [FdbEntry("02:34:00:00:%02x:%02x" % (i >> 8, i & 255), IPv4Address("192.0.2.20"), 4789)
            for i in range(20000)]
    assert not await kt.add_fdb(more)
    dumping = asyncio.ensure_future(kt.dump_fdb())
    await asyncio.sleep(0)
    assert not await kt.add_fdb([FdbEntry(fdb[0].mac, IPv4Address("192.0.2.21"), 4789)])
    assert not dumping.done(), "the add waited for the dump"
    assert len(await dumping) == N + len(more)


async def test_a_get_on_a_device_gone_fails_with_the_kernels_reason(dev):
    """An error reply ends a check with KmodError naming errno and extended ack, as a dump's does."""
    ns, kt, fdb, _neigh = dev
    sh("ip", "-n", ns, "link", "del", "vx0")
    async with kt.checker() as c:
        with pytest.raises(KmodError, match=r"^netlink get failed: No such device Unknown device ifindex"):
            await c.fdb_get(macs_of(fdb[:1]))
