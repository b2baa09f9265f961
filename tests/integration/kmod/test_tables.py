from __future__ import annotations

import errno
import time
from ipaddress import IPv4Address, IPv6Address

import pytest

from varpd_kmod import DeviceSpec, FdbEntry, KernelTables, KmodError, NeighEntry, ensure_overlay

from _kmod_helpers import sh

pytestmark = pytest.mark.integration


def fdb_entries(n: int, base: int = 0) -> list[FdbEntry]:
    out = []
    for i in range(base, base + n):
        mac = "02:10:%02x:%02x:%02x:%02x" % ((i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255)
        port = 8472 if i % 7 == 0 else 4789
        out.append(FdbEntry(mac, IPv4Address("192.0.2.0") + (10 + i % 200), port))
    return out


def neigh_entries(n: int) -> list[NeighEntry]:
    out = []
    for i in range(n):
        mac = "02:20:00:00:%02x:%02x" % ((i >> 8) & 255, i & 255)
        if i % 2:
            ip = IPv6Address("2001:db8:24::") + i
        else:
            ip = IPv4Address("10.24.0.0") + i
        out.append(NeighEntry(ip, mac))
    return out


@pytest.fixture
async def vx(make_netns):
    ns = make_netns("tbl")
    h = await ensure_overlay(DeviceSpec("vx0", 42, IPv4Address("192.0.2.1"), bridge="br0"), netns=ns)
    kt = KernelTables(h.ifindex, netns=ns)
    try:
        yield ns, h, kt
    finally:
        kt.close()


def bridge_fdb_remote(ns: str) -> set[tuple[str, str]]:
    out = set()
    for line in sh("bridge", "-n", ns, "fdb", "show", "dev", "vx0").splitlines():
        parts = line.split()
        if "dst" in parts:
            out.add((parts[0], parts[parts.index("dst") + 1]))
    return out


def ip_neigh(ns: str) -> set[tuple[str, str]]:
    out = set()
    for fam in ("-4", "-6"):
        for line in sh("ip", "-n", ns, fam, "neigh", "show", "dev", "vx0").splitlines():
            parts = line.split()
            if "lladdr" in parts and "PERMANENT" in parts:
                out.add((parts[0], parts[parts.index("lladdr") + 1]))
    return out


async def test_bulk_fdb_and_neigh(vx, capsys):
    ns, h, kt = vx
    entries = fdb_entries(10_000)
    t0 = time.perf_counter()
    failures = await kt.add_fdb(entries)
    dt = time.perf_counter() - t0
    assert failures == []
    rate = len(entries) / dt
    neighs = neigh_entries(1000)
    t1 = time.perf_counter()
    assert await kt.add_neigh(neighs) == []
    ndt = time.perf_counter() - t1
    with capsys.disabled():
        print(f"\n[kmod] add_fdb: {len(entries)} entries in {dt * 1000:.1f} ms = {rate:,.0f}/s")
        print(f"[kmod] add_neigh: {len(neighs)} entries in {ndt * 1000:.1f} ms = {len(neighs) / ndt:,.0f}/s")

    t2 = time.perf_counter()
    dumped = await kt.dump_fdb()
    with capsys.disabled():
        print(f"[kmod] dump_fdb: {len(dumped)} entries in {(time.perf_counter() - t2) * 1000:.1f} ms")
    assert dumped == dict.fromkeys(entries, True)  # every one carries varpd's mark
    assert bridge_fdb_remote(ns) == {(e.mac, str(e.dst)) for e in entries}
    assert await kt.dump_neigh() == dict.fromkeys(neighs, True)
    assert ip_neigh(ns) == {(str(e.ip), e.mac) for e in neighs}

    # the bridge's own "master" entries and the device MAC are not reported
    assert "master br0" in sh("bridge", "-n", ns, "fdb", "show", "dev", "vx0")

    # replace: same MAC, new destination
    moved = [FdbEntry(e.mac, IPv4Address("192.0.2.250"), e.port) for e in entries[:10]]
    assert await kt.add_fdb(moved) == []
    expected = set(moved) | set(entries[10:])
    assert set(await kt.dump_fdb()) == expected

    # delete half (including the moved ones)
    half = moved + entries[10:5000]
    t3 = time.perf_counter()
    assert await kt.del_fdb(half) == []
    with capsys.disabled():
        print(f"[kmod] del_fdb: {len(half)} entries in {(time.perf_counter() - t3) * 1000:.1f} ms")
    assert set(await kt.dump_fdb()) == set(entries[5000:])
    assert len(bridge_fdb_remote(ns)) == 5000
    assert await kt.del_neigh(neighs[:500]) == []
    assert set(await kt.dump_neigh()) == set(neighs[500:])
    assert len(ip_neigh(ns)) == 500

    # deleting what is already gone is not a failure (ENOENT ignored)
    assert await kt.del_fdb(half[:100]) == []
    assert await kt.del_neigh(neighs[:100]) == []


async def test_invalid_entries_do_not_stop_the_batch(vx):
    ns, h, kt = vx
    good = fdb_entries(300, base=1000)
    bad_af = FdbEntry("02:ff:00:00:00:01", IPv6Address("2001:db8::5"), 4789)
    bad_mac = FdbEntry("zz:ff:00:00:00:01", IPv4Address("192.0.2.5"), 4789)
    batch = good[:150] + [bad_af, bad_mac] + good[150:]
    failures = await kt.add_fdb(batch)
    by_entry = {f.entry: f for f in failures}
    assert set(by_entry) == {bad_af, bad_mac}
    assert by_entry[bad_af].errno == errno.EAFNOSUPPORT
    assert by_entry[bad_af].message
    assert by_entry[bad_mac].errno == errno.EINVAL
    assert set(await kt.dump_fdb()) == set(good)

    bad_neigh = NeighEntry(IPv4Address("10.24.9.9"), "02:00:00:00:00")  # short MAC
    ok = neigh_entries(10)
    failures = await kt.add_neigh(ok[:5] + [bad_neigh] + ok[5:])
    assert [f.entry for f in failures] == [bad_neigh]
    assert set(await kt.dump_neigh()) == set(ok)


async def test_only_remote_entries_are_dumped(vx):
    ns, h, kt = vx
    # an entry via the bridge is not a remote entry; the all-zeros default destination is
    sh("bridge", "-n", ns, "fdb", "append", "00:00:00:00:00:00", "dev", "vx0", "dst", "192.0.2.77", "self", "permanent")
    sh("ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
    sh("ip", "-n", ns, "link", "set", "p0", "master", "br0")
    sh("bridge", "-n", ns, "fdb", "add", "02:33:00:00:00:01", "dev", "p0", "master", "static")
    # a reachable / stale neighbour learned by the kernel is (resp. is not) reported
    sh("ip", "-n", ns, "neigh", "add", "10.99.0.1", "lladdr", "02:33:00:00:00:02", "dev", "vx0", "nud", "stale")
    sh("ip", "-n", ns, "neigh", "add", "10.99.0.2", "lladdr", "02:33:00:00:00:03", "dev", "vx0", "nud", "reachable")
    # added by hand: not varpd's
    assert await kt.dump_fdb() == {FdbEntry("00:00:00:00:00:00", IPv4Address("192.0.2.77"), 4789): False}
    assert await kt.dump_neigh() == {NeighEntry(IPv4Address("10.99.0.2"), "02:33:00:00:00:03"): False}
    kt.close()
    with pytest.raises(KmodError):
        await kt.add_fdb(fdb_entries(1))


async def test_tables_missing_netns():
    with pytest.raises(KmodError):
        KernelTables(1, netns="vk-missing-does-not-exist")


async def test_varpd_marks_its_entries_and_takes_over_unmarked_ones(vx):
    """iproute2 shows varpd's mark: `extern_learn` on FDB entries (the VXLAN FDB of this kernel
    drops NDA_PROTOCOL), `proto 118` on neighbours.  An unmarked entry for a MAC varpd wants is
    deleted and added again with the mark (take_fdb), since a replace does not re-mark it."""
    ns, h, kt = vx
    a, b = fdb_entries(2, base=5000)
    n = NeighEntry(IPv4Address("10.24.5.5"), a.mac)
    assert await kt.add_fdb([a]) == [] and await kt.add_neigh([n]) == []
    shown = sh("bridge", "-n", ns, "fdb", "show", "dev", "vx0")
    assert any(a.mac in line and "extern_learn" in line and "permanent" in line for line in shown.splitlines()), shown
    assert "proto 118" in sh("ip", "-n", ns, "neigh", "show", "dev", "vx0", "10.24.5.5")
    # changed by hand: no longer varpd's
    sh("bridge", "-n", ns, "fdb", "replace", a.mac, "dev", "vx0", "dst", "192.0.2.99", "self", "permanent")
    sh("bridge", "-n", ns, "fdb", "add", b.mac, "dev", "vx0", "dst", str(b.dst), "port", str(b.port), "self", "permanent")
    dumped = await kt.dump_fdb()
    assert dumped == {FdbEntry(a.mac, IPv4Address("192.0.2.99"), a.port): False, b: False}
    assert await kt.add_fdb([a, b]) == []  # a replace carries the mark, the kernel keeps the old flags
    assert set((await kt.dump_fdb()).values()) == {False}
    assert await kt.take_fdb([a, b]) == []
    assert await kt.dump_fdb() == {a: True, b: True}
    sh("ip", "-n", ns, "neigh", "replace", "10.24.5.5", "lladdr", b.mac, "dev", "vx0", "nud", "permanent",
       "protocol", "static")
    assert await kt.dump_neigh() == {NeighEntry(n.ip, b.mac): False}
    assert await kt.add_neigh([n]) == []  # a neighbour replace does re-mark
    assert await kt.dump_neigh() == {n: True}
