from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv6Address

import pytest

from varpd_kmod import (EventsLost, FdbChange, FdbEntry, KernelTables, L2Miss, L3Miss, MissListener,
                        NeighChange, NeighEntry)

from _kmod_helpers import ash, sh

pytestmark = pytest.mark.integration


async def wait_for_event(listener: MissListener, pred, timeout: float = 5.0, seen: list | None = None):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"expected event not seen; got {seen}")
        try:
            batch = await asyncio.wait_for(listener.next_batch(), remaining)
        except asyncio.TimeoutError:
            raise AssertionError(f"expected event not seen; got {seen}") from None
        for ev in batch:
            if seen is not None:
                seen.append(ev)
            if pred(ev):
                return ev


async def test_l3_then_l2_miss_ipv4(topo):
    vx_index = topo.handle.ifindex
    with MissListener(netns=topo.host) as ml:
        ml.watch(vx_index)
        seen: list = []
        ping = asyncio.create_task(ash("ping", "-c", "2", "-i", "0.3", "-W", "1", "10.23.0.2", ns=topo.guest))
        try:
            ev = await wait_for_event(ml, lambda e: isinstance(e, L3Miss) and e.ip == IPv4Address("10.23.0.2"), seen=seen)
        finally:
            await ping
        assert ev == L3Miss(ifindex=vx_index, ip=IPv4Address("10.23.0.2"))
        assert all(not isinstance(e, EventsLost) for e in seen)

        # answer the L3 miss: a plain permanent neighbour entry on the vxlan device
        sh("ip", "-n", topo.host, "neigh", "add", "10.23.0.2", "lladdr", "02:00:00:00:00:02",
           "dev", "vx0", "nud", "permanent")
        sh("ip", "-n", topo.guest, "neigh", "flush", "dev", "gv0")
        ping = asyncio.create_task(ash("ping", "-c", "2", "-i", "0.3", "-W", "1", "10.23.0.2", ns=topo.guest))
        try:
            ev = await wait_for_event(ml, lambda e: isinstance(e, L2Miss) and e.mac == "02:00:00:00:00:02", seen=seen)
        finally:
            await ping
        assert ev.ifindex == vx_index
        assert ev.vni is None  # the kernel reports the zero VNI of an empty remote
        guest_neigh = sh("ip", "-n", topo.guest, "neigh", "show", "10.23.0.2", "dev", "gv0")
        assert "lladdr 02:00:00:00:00:02" in guest_neigh, guest_neigh  # ARP answered by the kernel proxy


async def test_l3_miss_ipv6(topo):
    with MissListener(netns=topo.host) as ml:
        ml.watch(topo.handle.ifindex)
        ping = asyncio.create_task(ash("ping", "-6", "-c", "2", "-i", "0.3", "-W", "1", "fe80::2%gv0", ns=topo.guest))
        try:
            ev = await wait_for_event(ml, lambda e: isinstance(e, L3Miss) and e.ip == IPv6Address("fe80::2"))
        finally:
            await ping
        assert isinstance(ev.ip, IPv6Address) and ev.ifindex == topo.handle.ifindex

        # answered through the proxy once a neighbour entry exists
        sh("ip", "-n", topo.host, "neigh", "add", "fe80::2", "lladdr", "02:00:00:00:00:06", "dev", "vx0",
           "nud", "permanent")
        await ash("ping", "-6", "-c", "2", "-i", "0.3", "-W", "1", "fe80::2%gv0", ns=topo.guest)
        assert "lladdr 02:00:00:00:00:06" in sh("ip", "-n", topo.guest, "-6", "neigh", "show", "fe80::2", "dev", "gv0")


async def test_watch_filters_other_devices(topo):
    with MissListener(netns=topo.host) as ml:
        ml.watch(999_999)  # not our device
        ping = asyncio.create_task(ash("ping", "-c", "2", "-i", "0.3", "-W", "1", "10.23.0.3", ns=topo.guest))
        with pytest.raises(AssertionError):
            await wait_for_event(ml, lambda e: True, timeout=1.0)
        await ping
        ml.unwatch(999_999)
        assert ml.watched == frozenset()


async def test_enobufs_yields_events_lost(topo):
    ml = MissListener(netns=topo.host, rcvbuf=4096)
    assert ml.rcvbuf < 64 * 1024
    # a burst of neighbour notifications while nobody reads
    kt = KernelTables(topo.handle.ifindex, netns=topo.host)
    try:
        burst = [NeighEntry(IPv4Address("10.25.0.0") + i, "02:25:00:00:%02x:%02x" % (i >> 8, i & 255))
                 for i in range(500)]
        assert await kt.add_neigh(burst) == []
        ev = await wait_for_event(ml, lambda e: isinstance(e, EventsLost), timeout=2.0)
        assert "ENOBUFS" in ev.reason
        assert ml.lost >= 1
        # the listener keeps working afterwards
        ml.watch(topo.handle.ifindex)
        ping = asyncio.create_task(ash("ping", "-c", "2", "-i", "0.3", "-W", "1", "10.23.0.4", ns=topo.guest))
        try:
            await wait_for_event(ml, lambda e: isinstance(e, L3Miss) and e.ip == IPv4Address("10.23.0.4"))
        finally:
            await ping
    finally:
        kt.close()
        ml.close()


async def test_events_iterator(topo):
    ml = MissListener(netns=topo.host)
    ml.watch(topo.handle.ifindex)
    got = []

    async def consume():
        async for ev in ml.events():
            got.append(ev)
            if isinstance(ev, L3Miss) and ev.ip == IPv4Address("10.23.0.5"):
                return ev

    ping = asyncio.create_task(ash("ping", "-c", "2", "-i", "0.3", "-W", "1", "10.23.0.5", ns=topo.guest))
    try:
        ev = await asyncio.wait_for(consume(), 5)
    finally:
        await ping
        ml.close()
    assert ev.ifindex == topo.handle.ifindex


async def test_entry_changes_of_watched_devices(topo):
    """FDB and neighbour changes of a watch_entries() device arrive on the miss socket, marked
    with whether they are varpd's; the bridge's learning on guest ports is not reported."""
    vx = topo.handle.ifindex
    mine = FdbEntry("02:14:00:00:00:01", IPv4Address("192.0.2.2"), 4789)
    with MissListener(netns=topo.host) as ml, KernelTables(vx, netns=topo.host) as kt:
        ml.watch_entries(vx)
        seen: list = []
        assert await kt.add_fdb([mine]) == []
        ev = await wait_for_event(ml, lambda e: isinstance(e, FdbChange), seen=seen)
        assert ev == FdbChange(vx, mine.mac, mine.dst, 0, deleted=False, owned=True)  # port 0: the device's
        sh("bridge", "-n", topo.host, "fdb", "del", mine.mac, "dev", "vx0", "self")
        ev = await wait_for_event(ml, lambda e: isinstance(e, FdbChange), seen=seen)
        assert (ev.mac, ev.deleted) == (mine.mac, True)
        sh("bridge", "-n", topo.host, "fdb", "add", mine.mac, "dev", "vx0", "dst", "192.0.2.9", "port", "8472",
           "self", "permanent")
        ev = await wait_for_event(ml, lambda e: isinstance(e, FdbChange), seen=seen)
        assert ev == FdbChange(vx, mine.mac, IPv4Address("192.0.2.9"), 8472, deleted=False, owned=False)

        n = NeighEntry(IPv4Address("10.23.14.1"), mine.mac)
        assert await kt.add_neigh([n]) == []
        ev = await wait_for_event(ml, lambda e: isinstance(e, NeighChange), seen=seen)
        assert ev == NeighChange(vx, n.ip, n.mac, deleted=False, owned=True)
        sh("ip", "-n", topo.host, "neigh", "del", str(n.ip), "dev", "vx0")
        # the kernel first says FAILED (an RTM_NEWNEIGH: no usable lladdr), then RTM_DELNEIGH
        ev = await wait_for_event(ml, lambda e: isinstance(e, NeighChange) and e.deleted, seen=seen)
        assert ev == NeighChange(vx, n.ip, None, deleted=True, owned=True)

        # the guest's traffic makes the bridge learn its MAC on a guest port: not a watched device
        await ash("ping", "-c", "1", "-W", "1", "10.23.0.9", ns=topo.guest, check=False)
        ml.unwatch_entries(vx)
        assert await kt.add_fdb([mine]) == []
        await asyncio.sleep(0.2)
        late = ml.poll()
        assert not [e for e in seen + late if isinstance(e, (FdbChange, NeighChange)) and e.ifindex != vx], seen
        assert not [e for e in late if isinstance(e, FdbChange)]
