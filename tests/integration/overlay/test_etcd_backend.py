"""The etcd backend against a real etcd on loopback (root namespace): load, watch, compaction, outage."""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import logging
import time

import pytest

from varpd.backend.base import OverlayContext
from varpd.backend.properties import resolve
from varpd.model import Mapping

from etcd_fixture import TcpProxy, etcd_cluster, etcd_server  # noqa: F401  (fixtures)

aetcd = pytest.importorskip("aetcd")
from varpd_plugins.etcd import EtcdBackend  # noqa: E402

VNI = 23
_n = itertools.count()


def rec(i: int, host: int = 1, **extra) -> str:
    body = {"ip": f"192.0.2.{host}", "port": 4789, "arp": f"10.1.{i // 250}.{i % 250 + 1}"}
    body.update(extra)
    return json.dumps(body)


def mac(i: int) -> str:
    return f"02:00:00:00:{i // 256:02x}:{i % 256:02x}"


@pytest.fixture
def prefix():
    return f"/t{next(_n)}-{time.monotonic_ns()}"


class Harness:
    def __init__(self, endpoint: str, prefix: str, **props):
        values = resolve(EtcdBackend.properties, {"etcd/endpoints": endpoint, "etcd/prefix": prefix,
                                                  "etcd/timeout": 2, "etcd/retry_max": 1, **props})
        self.backend = EtcdBackend(OverlayContext("vxt", VNI, ipaddress.ip_address("192.0.2.9"), 4789), values)
        self.changes = []
        self.status = []
        self.backend.add_listener(self.changes.append)
        self.backend.add_status_listener(self.status.append)

    def macs(self) -> set[str]:
        return set(self.backend.mapping.by_mac)

    async def wait(self, pred, timeout: float = 10.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; mapping={sorted(self.macs())} "
                                     f"status={self.status}")
            await asyncio.sleep(0.05)


async def test_load_then_watch_put_update_delete(etcd_server, prefix, caplog):
    etcd = etcd_server
    etcd.put(f"{prefix}/{VNI}/{mac(1)}", rec(1))
    etcd.put(f"{prefix}/{VNI}/{mac(2).upper()}", rec(2, host=2))  # any MAC spelling, canonical in the mapping
    etcd.put(f"{prefix}/{VNI + 1}/{mac(3)}", rec(3))  # another VNI: ignored
    etcd.put(f"{prefix}/{VNI}/{mac(4)}", rec(4, port=70000))  # bad value: logged, ignored
    etcd.put(f"{prefix}/{VNI}/not-a-mac", rec(5))
    h = Harness(etcd.endpoint, prefix)
    caplog.set_level(logging.INFO)
    await h.backend.start()
    try:
        assert h.macs() == {mac(1), mac(2)}
        assert h.backend.degraded is None
        assert h.backend.mapping.by_mac[mac(2)].dest.ip == ipaddress.ip_address("192.0.2.2")
        bad = [r.getMessage() for r in caplog.records if "bad-record" in r.getMessage()]
        assert len(bad) == 2, bad
        assert any(f"{prefix}/{VNI}/{mac(4)}" in m and "'port'" in m for m in bad), bad
        assert any("not-a-mac" in m and "is not a MAC address" in m for m in bad), bad
        await h.wait(lambda: h.backend.watches >= 1, what="watch")

        etcd.put(f"{prefix}/{VNI}/{mac(6)}", rec(6, host=3, ndp="fe80::6"))
        await h.wait(lambda: mac(6) in h.macs(), what="put to arrive")
        assert h.changes[-1].upserted[0].mac == mac(6) and not h.changes[-1].removed

        etcd.put(f"{prefix}/{VNI}/{mac(6)}", rec(6, host=2))  # update: moved, lost its ndp
        await h.wait(lambda: str(h.backend.mapping.by_mac[mac(6)].dest.ip) == "192.0.2.2", what="update")
        assert ipaddress.ip_address("fe80::6") not in h.backend.mapping.by_ip

        etcd.delete(f"{prefix}/{VNI}/{mac(1)}")
        await h.wait(lambda: mac(1) not in h.macs(), what="delete")
        assert [r.mac for r in h.changes[-1].removed] == [mac(1)] and not h.changes[-1].upserted

        etcd.put(f"{prefix}/{VNI}/{mac(4)}", rec(4))  # the bad key fixed: now usable
        await h.wait(lambda: mac(4) in h.macs(), what="fixed key")
        etcd.put(f"{prefix}/{VNI + 1}/{mac(7)}", rec(7))
        etcd.put(f"{prefix}/{VNI}/{mac(8)}", rec(8))
        await h.wait(lambda: mac(8) in h.macs(), what="put after other-VNI put")
        assert mac(7) not in h.macs() and mac(3) not in h.macs()
        # the mapping we hold equals a fresh read of etcd
        h2 = Harness(etcd.endpoint, prefix)
        await h2.backend.start()
        await h2.backend.stop()
        assert h2.backend.mapping == h.backend.mapping
        assert h.status == []  # never degraded
    finally:
        await h.backend.stop()


async def _put_many(endpoint: str, items: list[tuple[str, str]]) -> None:
    """Puts in transactions of 100 (the fixture's etcd allows 128 operations a transaction)."""
    host, port = endpoint.split(":")
    async with aetcd.Client(host, int(port)) as client:
        for i in range(0, len(items), 100):
            await client.transaction(compare=[], success=[client.transactions.put(k.encode(), v.encode())
                                                          for k, v in items[i:i + 100]], failure=[])


async def test_paged_read_is_one_snapshot_while_puts_go_on(etcd_server, prefix, caplog):
    """3000 keys read 7 at a time (430 requests) while another client puts new keys and deletes
    old ones: every page is read at the first page's revision R, so the loaded mapping is etcd's
    at R exactly (an unpinned read also saw later writes), the watch from R + 1 brings the rest,
    and each new key is emitted exactly once."""
    etcd = etcd_server
    key = f"{prefix}/{VNI}/"
    await _put_many(etcd.endpoint, [(key + mac(i), rec(i)) for i in range(3000)])
    h = Harness(etcd.endpoint, prefix, **{"etcd/page_size": 7})
    caplog.set_level(logging.INFO, logger="varpd_plugins.etcd")
    host, port = etcd.endpoint.split(":")
    writes = []  # (MAC, revision, put or delete, was the backend's read finished?)
    async with aetcd.Client(host, int(port)) as client:
        async def writer():
            for i in range(3000, 3300):
                await asyncio.sleep(0.002)
                resp = await client.put((key + mac(i)).encode(), rec(i, host=2).encode())
                writes.append((mac(i), resp.header.revision, "put", h.backend.loads > 0))
                if i % 5 == 0:  # a key the read may not have reached yet, or has passed
                    gone = mac((i - 3000) * 10)
                    resp = await client.delete((key + gone).encode())
                    writes.append((gone, resp.header.revision, "delete", h.backend.loads > 0))
        try:
            await asyncio.gather(h.backend.start(), writer())
            loaded = next(int(r.getMessage().split("revision=")[1].split()[0]) for r in caplog.records
                          if "event=loaded" in r.getMessage())
            assert h.backend.pages >= 400
            assert any(rev > loaded and not done for _, rev, _, done in writes), \
                f"no write landed while the read was going on (read at {loaded}, writes {writes[:3]}...)"
            at_read = {mac(i) for i in range(3000)}
            at_read |= {m for m, rev, kind, _ in writes if kind == "put" and rev <= loaded}
            at_read -= {m for m, rev, kind, _ in writes if kind == "delete" and rev <= loaded}
            assert {r.mac for r in h.changes[0].upserted} == at_read, "the read is not etcd at one revision"
            expected = {mac(i) for i in range(3300)} - {m for m, _, kind, _ in writes if kind == "delete"}
            await h.wait(lambda: h.macs() == expected, what="the writes made during the read")
            new = {mac(i) for i in range(3000, 3300)}
            upserts = [r.mac for c in h.changes for r in c.upserted if r.mac in new]
            assert sorted(upserts) == sorted(new), "a new key lost or emitted twice"
            assert h.backend.loads == 1 and h.status == []
        finally:
            await h.backend.stop()


async def test_a_compaction_during_the_paged_read_starts_it_again(etcd_server, prefix, caplog):
    etcd = etcd_server
    key = f"{prefix}/{VNI}/"
    await _put_many(etcd.endpoint, [(key + mac(i), rec(i)) for i in range(400)])
    h = Harness(etcd.endpoint, prefix, **{"etcd/page_size": 1})
    caplog.set_level(logging.INFO, logger="varpd_plugins.etcd")

    async def compactor():
        while h.backend.pages < 20:
            await asyncio.sleep(0.001)
        etcd.put(key + mac(500), rec(500))
        etcd.compact()  # the read's revision is gone: its next page fails with OUT_OF_RANGE

    try:
        await asyncio.gather(h.backend.start(), compactor())
        assert any("event=read-restarted" in r.getMessage() for r in caplog.records)
        assert h.macs() == {mac(i) for i in range(400)} | {mac(500)}
        assert h.backend.loads == 1 and h.status == []
    finally:
        await h.backend.stop()


async def test_compaction_while_the_watch_is_broken_reloads_and_emits_the_difference(etcd_server, prefix):
    etcd = etcd_server
    for i in range(20):
        etcd.put(f"{prefix}/{VNI}/{mac(i)}", rec(i))
    proxy = await TcpProxy("127.0.0.1", etcd.client_port).start()
    h = Harness(proxy.endpoint, prefix, **{"etcd/timeout": 10})
    await h.backend.start()
    try:
        await h.wait(lambda: h.backend.watches == 1, what="watch")
        assert len(h.macs()) == 20
        loads = h.backend.loads
        proxy.cut()  # the watch breaks; the backend reconnects at once and is held by the proxy
        await asyncio.sleep(0.3)
        # meanwhile: many changes, then compaction past the backend's revision
        host, port = etcd.endpoint.split(":")
        async with aetcd.Client(host, int(port)) as client:
            for i in range(20, 120):
                await client.put(f"{prefix}/{VNI}/{mac(i)}".encode(), rec(i, host=2).encode())
            for i in range(10):
                await client.delete(f"{prefix}/{VNI}/{mac(i)}".encode())
        etcd.put(f"{prefix}/{VNI}/{mac(15)}", rec(15, host=3))
        etcd.compact()
        proxy.release()
        expected = {mac(i) for i in range(10, 120)}
        await h.wait(lambda: h.macs() == expected, what="reload after compaction")
        assert h.backend.loads == loads + 1, "compaction must cause exactly one full reload"
        assert str(h.backend.mapping.by_mac[mac(15)].dest.ip) == "192.0.2.3"
        # only the difference was emitted after the reload
        last = h.changes[-1]
        assert {r.mac for r in last.removed} == {mac(i) for i in range(10)}
        assert {r.mac for r in last.upserted} == {mac(i) for i in range(20, 120)} | {mac(15)}
        assert h.status == [], "a watch that resumes at once is not an outage"
        # and the watch works again
        etcd.put(f"{prefix}/{VNI}/{mac(200)}", rec(200))
        await h.wait(lambda: mac(200) in h.macs(), what="watch after reload")
    finally:
        await h.backend.stop()
        await proxy.close()


async def test_watch_break_resumes_from_last_revision(etcd_server, prefix):
    etcd = etcd_server
    etcd.put(f"{prefix}/{VNI}/{mac(1)}", rec(1))
    proxy = await TcpProxy("127.0.0.1", etcd.client_port).start()
    h = Harness(proxy.endpoint, prefix, **{"etcd/timeout": 10})
    await h.backend.start()
    try:
        await h.wait(lambda: h.backend.watches == 1, what="watch")
        proxy.cut()
        await asyncio.sleep(0.3)
        etcd.put(f"{prefix}/{VNI}/{mac(2)}", rec(2))
        etcd.delete(f"{prefix}/{VNI}/{mac(1)}")
        proxy.release()
        await h.wait(lambda: h.macs() == {mac(2)}, what="events made during the break")
        assert h.backend.loads == 1, "no compaction: resumed from revision+1, no reload"
        assert h.backend.watches == 2 and h.status == []
    finally:
        await h.backend.stop()
        await proxy.close()


async def test_outage_degrades_once_serves_old_mapping_and_catches_up(etcd_server, prefix, caplog):
    etcd = etcd_server
    etcd.put(f"{prefix}/{VNI}/{mac(1)}", rec(1))
    etcd.put(f"{prefix}/{VNI}/{mac(2)}", rec(2))
    h = Harness(etcd.endpoint, prefix)
    caplog.set_level(logging.INFO)
    await h.backend.start()
    try:
        await h.wait(lambda: h.backend.watches == 1, what="watch")
        etcd.stop()
        await h.wait(lambda: h.backend.degraded is not None, what="degraded")
        assert "etcd unreachable" in h.backend.degraded and etcd.endpoint in h.backend.degraded
        await asyncio.sleep(3)  # several retries (backoff capped at 1 s here)
        assert len(h.status) == 1, f"the outage must be reported once: {h.status}"
        outage_logs = [r for r in caplog.records if "event=outage" in r.getMessage()]
        assert len(outage_logs) == 1, [r.getMessage() for r in outage_logs]
        # still answering from what it knew
        assert (await h.backend.lookup(mac(1))) is not None
        assert await h.backend.arp(ipaddress.ip_address("10.1.0.3")) == mac(2)

        etcd.start()
        etcd.put(f"{prefix}/{VNI}/{mac(3)}", rec(3))
        etcd.delete(f"{prefix}/{VNI}/{mac(1)}")
        await h.wait(lambda: h.macs() == {mac(2), mac(3)}, timeout=15, what="catch up after the outage")
        await h.wait(lambda: h.backend.degraded is None, what="ONLINE again")
        assert h.status[-1] is None and len(h.status) == 2
        etcd.put(f"{prefix}/{VNI}/{mac(4)}", rec(4))
        await h.wait(lambda: mac(4) in h.macs(), what="watch after recovery")
    finally:
        if etcd.proc.poll() is not None:
            etcd.start()
        await h.backend.stop()


async def test_unreachable_at_start_starts_empty_and_degraded_then_fills_in(etcd_server, prefix, tmp_path):
    etcd = etcd_server
    etcd.put(f"{prefix}/{VNI}/{mac(1)}", rec(1))
    proxy = await TcpProxy("127.0.0.1", etcd.client_port).start()
    await proxy.close()  # nothing listens on its port now
    h = Harness(f"{proxy.endpoint},{etcd.endpoint}", prefix)  # a cluster: first member down
    t0 = time.monotonic()
    await h.backend.start()
    try:
        assert time.monotonic() - t0 < 3
        # first endpoint refused: degraded with an empty mapping, then the next endpoint answers
        assert h.backend.mapping == Mapping() and h.backend.degraded is not None
        await h.wait(lambda: h.macs() == {mac(1)}, what="fill in from the second endpoint")
        assert h.backend.degraded is None
    finally:
        await h.backend.stop()


# -- a frozen member (SIGSTOP): the connection stays open, nothing answers -----------------------
# etcd/timeout is 2 s here: a silent watch is probed after 2 s, the probe gives up after 2 s more.
FREEZE_BOUND = 10.0  # s until DEGRADED: 2 × etcd/timeout plus slack for a loaded machine


def put_retrying(member, key: str, value: str, timeout: float = 20.0) -> None:
    """A put through `member`, retried while the cluster elects a leader to replace a frozen one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return member.put(key, value)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise


async def started_then_frozen(h: Harness, *members) -> float:
    """Start the backend, wait for its watch, SIGSTOP `members`; the monotonic time of the freeze."""
    await h.backend.start()
    await h.wait(lambda: h.backend.watches == 1, what="watch")
    for m in members:
        m.freeze()
    return time.monotonic()


async def wait_degraded(h: Harness, t0: float, what: str) -> None:
    await h.wait(lambda: h.status and h.status[0] is not None, timeout=FREEZE_BOUND, what=f"DEGRADED ({what})")
    print(f"{what}: DEGRADED after {time.monotonic() - t0:.1f}s")


async def test_a_frozen_single_etcd_degrades_and_recovers_after_sigcont(etcd_server, prefix):
    etcd = etcd_server
    etcd.put(f"{prefix}/{VNI}/{mac(1)}", rec(1))
    h = Harness(etcd.endpoint, prefix)
    try:
        t0 = await started_then_frozen(h, etcd)
        await wait_degraded(h, t0, "frozen single etcd")
        assert etcd.endpoint in h.backend.degraded
        assert (await h.backend.lookup(mac(1))) is not None  # still serving what it knew
        etcd.thaw()
        etcd.put(f"{prefix}/{VNI}/{mac(2)}", rec(2))
        await h.wait(lambda: h.backend.degraded is None and mac(2) in h.macs(), timeout=20,
                     what="ONLINE and current after SIGCONT")
    finally:
        etcd.thaw()
        await h.backend.stop()


async def test_a_frozen_member_fails_over_to_a_healthy_one(etcd_cluster, prefix):
    m0, m1, _ = etcd_cluster.members
    m1.put(f"{prefix}/{VNI}/{mac(1)}", rec(1))
    h = Harness(etcd_cluster.endpoints, prefix)  # watches through m0, the first endpoint
    try:
        t0 = await started_then_frozen(h, m0)
        await asyncio.to_thread(put_retrying, m1, f"{prefix}/{VNI}/{mac(2)}", rec(2))  # through a healthy member
        await wait_degraded(h, t0, "frozen member")
        assert m0.endpoint in h.status[0] and "stopped answering" in h.status[0]
        await h.wait(lambda: mac(2) in h.macs(), timeout=10, what="the put through the healthy member")
        print(f"frozen member: put reached the backend after {time.monotonic() - t0:.1f}s")
        await h.wait(lambda: h.backend.degraded is None, timeout=10, what="ONLINE on the healthy member")
        assert h.backend.session.endpoint != m0.endpoint
        m0.thaw()
        await asyncio.to_thread(put_retrying, m1, f"{prefix}/{VNI}/{mac(3)}", rec(3))
        await h.wait(lambda: mac(3) in h.macs() and h.backend.degraded is None, timeout=10, what="after SIGCONT")
        assert h.backend.loads == 1, "resumed from the last revision: no reload"
    finally:
        m0.thaw()
        await h.backend.stop()


async def test_lost_quorum_degrades_and_recovers(etcd_cluster, prefix):
    m0, m1, m2 = etcd_cluster.members
    m0.put(f"{prefix}/{VNI}/{mac(1)}", rec(1))
    h = Harness(etcd_cluster.endpoints, prefix)
    try:
        t0 = await started_then_frozen(h, m1, m2)  # m0 answers but has no quorum: no writes, reads time out
        await wait_degraded(h, t0, "lost quorum")
        assert (await h.backend.lookup(mac(1))) is not None
        m1.thaw()
        m2.thaw()
        await h.wait(lambda: h.backend.degraded is None, timeout=30, what="ONLINE with quorum back")
        await asyncio.to_thread(put_retrying, m2, f"{prefix}/{VNI}/{mac(2)}", rec(2))
        await h.wait(lambda: mac(2) in h.macs(), timeout=10, what="a put after quorum came back")
    finally:
        m1.thaw()
        m2.thaw()
        await h.backend.stop()
