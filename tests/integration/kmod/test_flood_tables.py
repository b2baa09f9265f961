"""Kernel side of flooding (#15 item 1): a flood list of several all-zeros FDB entries on one VXLAN
device, the bridge port's neigh_suppress, and the static bridge FDB entries it answers for."""
from __future__ import annotations

import json
from ipaddress import IPv4Address

import pytest

from varpd_kmod import DeviceSpec, FdbEntry, KernelTables, ensure_overlay

from _kmod_helpers import sh

pytestmark = pytest.mark.integration

ZERO = "00:00:00:00:00:00"


@pytest.fixture
async def flooding(make_netns):
    ns = make_netns("f15")
    spec = DeviceSpec("vx0", 42, IPv4Address("192.0.2.1"), bridge="br0", proxy=False, l2miss=False, l3miss=False,
                      neigh_suppress=True)
    h = await ensure_overlay(spec, netns=ns)
    kt = KernelTables(h.ifindex, netns=ns)
    try:
        yield ns, spec, kt
    finally:
        kt.close()


def brport(ns: str) -> dict:
    return json.loads(sh("bridge", "-n", ns, "-d", "-j", "link", "show", "dev", "vx0"))[0]


async def test_flood_list_is_appended_per_vtep_and_deleted_one_by_one(flooding):
    ns, _spec, kt = flooding
    zeros = [FdbEntry(ZERO, IPv4Address(f"192.0.2.{n}"), 4789) for n in (2, 3, 4)]
    assert await kt.add_fdb(zeros) == []
    assert await kt.add_fdb(zeros[:1]) == []  # appending a remote that exists is a no-op
    assert await kt.dump_fdb() == dict.fromkeys(zeros, True)
    shown = [e["dst"] for e in json.loads(sh("bridge", "-n", ns, "-j", "fdb", "show", "dev", "vx0"))
             if e["mac"] == ZERO]
    assert sorted(shown) == ["192.0.2.2", "192.0.2.3", "192.0.2.4"]
    assert await kt.del_fdb(zeros[1:2]) == []
    assert set(await kt.dump_fdb()) == {zeros[0], zeros[2]}


async def test_neigh_suppress_port_and_its_static_bridge_entries(flooding):
    ns, spec, kt = flooding
    port = brport(ns)
    assert port.get("neigh_suppress") is True, port
    macs = {"02:15:00:00:00:01", "02:15:00:00:00:02"}
    assert await kt.add_port_fdb(sorted(macs)) == []
    assert await kt.dump_port_fdb() == macs  # the port's own (permanent) address is not one of ours
    shown = json.loads(sh("bridge", "-n", ns, "-j", "fdb", "show", "dev", "vx0"))
    assert {e["mac"] for e in shown if e.get("master") == "br0" and e["state"] == "static"} == macs, shown
    assert await kt.del_port_fdb(["02:15:00:00:00:01", "02:15:00:00:00:99"]) == []  # a gone one is no error
    assert await kt.dump_port_fdb() == {"02:15:00:00:00:02"}
    await ensure_overlay(spec, netns=ns)  # adoption keeps the port's setting
    assert brport(ns).get("neigh_suppress") is True


async def test_a_dump_gives_the_loop_a_turn_between_receives_the_kernel_is_slow_to_fill(flooding, monkeypatch):
    """The kernel makes each part of a dump inside recv() (a flooding device's 100k entries with
    the bridge's 100k: ~50 ms a receive, O(n) each): the time spent there counts toward the
    dump's slice, so the loop gets a turn between two such receives, not only inside parsing."""
    import asyncio
    import time

    _ns, _spec, kt = flooding
    entries = [FdbEntry(f"02:15:01:00:{i >> 8:02x}:{i & 255:02x}", IPv4Address("192.0.2.2"), 4789) for i in range(5000)]
    assert await kt.add_fdb(entries) == []
    loop = asyncio.get_running_loop()
    real, receives, turns = loop.sock_recv_into, 0, 0

    def slow_recv(sock, buf):  # a receive whose kernel work takes longer than a slice
        nonlocal receives
        receives += 1
        time.sleep(1.5 * kt.DUMP_SLICE)
        return real(sock, buf)

    async def other():
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    monkeypatch.setattr(loop, "sock_recv_into", slow_recv)
    task = loop.create_task(other())
    await asyncio.sleep(0)
    turns = 0
    try:
        assert len(await kt.dump_fdb()) == 5000
    finally:
        task.cancel()
    assert receives >= 8 and turns >= receives - 2, (receives, turns)
