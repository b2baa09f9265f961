"""Drift repair from kernel events and ownership of kernel entries (issue #14 items 1, 2).

One push-mode lab whose safety pass is an hour away: whatever comes back within a second came
back from the kernel's change events, not from the periodic reconcile. host1's daemon has a small
event buffer so that a burst of neighbour events overflows it (ENOBUFS) on demand.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from varpd.lab.topology import http_request

from _overlay_helpers import fdb, neigh, overlay_lab, remote_fdb_ok, remote_neigh_ok, wait_for

pytestmark = pytest.mark.integration

VX = "vx23"
HAND_MAC, HAND_IP = "02:d1:40:00:00:99", "10.55.55.99"  # nobody's in the mapping


@pytest.fixture(scope="module")
def ov(tmp_path_factory):
    with overlay_lab(tmp_path_factory.mktemp("drift"), tag="d14", mode="push", reconcile_interval=3600.0,
                     daemon={"event_buffer": 16384}) as ov:
        ov.wait_pushed()
        yield ov


def counters(ov, host) -> dict:
    return ov.lab.api(host, "/v1/overlays/vx23")[1]["counters"]


def back_within(pred, timeout: float, what: str) -> float:
    """Seconds until `pred` holds, polled tightly; fails after `timeout`."""
    t0 = time.perf_counter()
    wait_for(pred, timeout, what, interval=0.005)
    return time.perf_counter() - t0


def test_entries_deleted_behind_the_daemons_back_are_back_within_a_second(ov):
    lab, h1, h2, h3 = ov.lab, ov.h1, ov.h2, ov.h3
    ns = lab.host_ns(h1)
    before = counters(ov, h1)
    lab.exec(ns, "bridge", "fdb", "del", h2.guest_mac, "dev", VX, "self")
    fdb_s = back_within(lambda: fdb(lab, h1).get(h2.guest_mac, {}).get("dst") == h2.underlay_ip, 1.0,
                        "the deleted FDB entry back")
    lab.exec(ns, "ip", "neigh", "del", h3.guest_ip4, "dev", VX)
    lab.exec(ns, "ip", "neigh", "del", h3.guest_ip6, "dev", VX)
    neigh_s = back_within(lambda: remote_neigh_ok(lab, h1, [h3]), 1.0, "the deleted neighbour entries back")
    print(f"\n[drift] bridge fdb del -> back in {fdb_s * 1000:.1f} ms; ip neigh del x2 -> back in {neigh_s * 1000:.1f} ms")
    after = counters(ov, h1)
    assert after.get("reconciles") == before.get("reconciles"), "repaired by the full pass, not by events"
    assert after.get("drift_repairs", 0) >= before.get("drift_repairs", 0) + 2
    # what came back carries varpd's mark
    assert "extern_learn" in fdb(lab, h1)[h2.guest_mac].get("flags", [])
    assert neigh(lab, h1)[h3.guest_ip4].get("protocol") == "118"


def test_entries_changed_by_hand_are_taken_back(ov):
    lab, h1, h2 = ov.lab, ov.h1, ov.h2
    ns = lab.host_ns(h1)
    lab.exec(ns, "bridge", "fdb", "replace", h2.guest_mac, "dev", VX, "dst", "192.0.2.99", "self", "permanent")
    lab.exec(ns, "ip", "neigh", "replace", h2.guest_ip4, "lladdr", HAND_MAC, "dev", VX, "nud", "permanent")

    def taken_back():
        e, n = fdb(lab, h1).get(h2.guest_mac, {}), neigh(lab, h1).get(h2.guest_ip4, {})
        return (e.get("dst") == h2.underlay_ip and "extern_learn" in e.get("flags", [])
                and n.get("lladdr") == h2.guest_mac)

    back_within(taken_back, 1.0, "the hand-changed entries back to the mapping's, marked")


def test_hand_added_entries_of_other_owners_survive_every_reconcile(ov):
    lab, h1 = ov.lab, ov.h1
    ns = lab.host_ns(h1)
    lab.exec(ns, "bridge", "fdb", "add", HAND_MAC, "dev", VX, "dst", "192.0.2.99", "self", "permanent")
    lab.exec(ns, "ip", "neigh", "add", HAND_IP, "lladdr", HAND_MAC, "dev", VX, "nud", "permanent", "protocol", "static")
    # a stray entry with varpd's mark (as an earlier run of varpd leaves one): the reconciler's to remove
    stray = "02:d1:40:00:00:98"
    lab.exec(ns, "bridge", "fdb", "add", stray, "dev", VX, "dst", "192.0.2.98", "self", "permanent", "extern_learn")
    try:
        for _ in range(2):  # what `varpd reconcile vx23` asks
            status, summary = http_request(lab.socket_path(h1), "POST", f"/v1/overlays/{VX}/reconcile", timeout=10)
            assert status == 200, summary
        f, n = fdb(lab, h1), neigh(lab, h1)
        assert f.get(HAND_MAC, {}).get("dst") == "192.0.2.99", f
        assert n.get(HAND_IP, {}).get("lladdr") == HAND_MAC, n
        assert stray not in f
        assert remote_fdb_ok(lab, h1, ov.remotes(h1)) and remote_neigh_ok(lab, h1, ov.remotes(h1))
    finally:
        lab.exec(ns, "bridge", "fdb", "del", HAND_MAC, "dev", VX, "self", check=False)
        lab.exec(ns, "ip", "neigh", "del", HAND_IP, "dev", VX, check=False)


def test_lost_events_still_trigger_a_full_pass(ov, tmp_path):
    """A burst of neighbour events on another device overflows host1's 16 KiB event buffer: ENOBUFS
    is counted and answered with a full pass, which also repairs an entry deleted in the burst."""
    lab, h1, h2 = ov.lab, ov.h1, ov.h2
    ns = lab.host_ns(h1)
    before = counters(ov, h1)
    lab.exec(ns, "ip", "link", "add", "d14a", "type", "veth", "peer", "name", "d14b")
    try:
        lab.exec(ns, "ip", "link", "set", "d14a", "up")
        batch = tmp_path / "neigh.batch"
        batch.write_text("".join(f"neigh add 10.214.{i >> 8}.{i & 255} lladdr 02:d1:4b:00:{i >> 8:02x}:{i & 255:02x} "
                                 f"dev d14a nud permanent\n" for i in range(4000))
                         + f"neigh del {h2.guest_ip4} dev {VX}\n")
        # the daemon stopped while the burst is queued: on an idle machine it drained 4000 events
        # through the small buffer as fast as they came, and no ENOBUFS happened at all
        pid = lab.daemons[h1.name].proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            lab.exec(ns, "ip", "-batch", str(batch))
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for(lambda: counters(ov, h1).get("events_lost", 0) > before.get("events_lost", 0), 5,
                 "host1 to see ENOBUFS on its event socket")
        wait_for(lambda: counters(ov, h1).get("reconciles", 0) > before.get("reconciles", 0), 5,
                 "a full pass after the lost events")
        wait_for(lambda: remote_neigh_ok(lab, h1, [h2]), 2, "the entry deleted in the burst back")
        assert lab.api(h1, "/v1/health")[0] == 200  # the daemon kept serving
    finally:
        lab.exec(ns, "ip", "link", "del", "d14a", check=False)


def test_an_older_varpds_unmarked_entries_are_adopted_at_start(ov):
    """What a varpd without marks left: the entries the mapping still wants are re-marked at the next
    start (the FDB one deleted and added again, the neighbour replaced); an unmarked entry for a
    key no longer wanted cannot be told from a hand-added one and stays."""
    lab, h1, h2 = ov.lab, ov.h1, ov.h2
    ns = lab.host_ns(h1)
    lab.stop_varpd(h1)
    gone = "02:d1:40:00:00:97"  # a guest an older varpd had programmed, since removed from the mapping
    try:
        lab.exec(ns, "bridge", "fdb", "replace", h2.guest_mac, "dev", VX, "dst", h2.underlay_ip, "self", "permanent")
        lab.exec(ns, "ip", "neigh", "del", h2.guest_ip4, "dev", VX)
        lab.exec(ns, "ip", "neigh", "add", h2.guest_ip4, "lladdr", h2.guest_mac, "dev", VX, "nud", "permanent")
        lab.exec(ns, "bridge", "fdb", "add", gone, "dev", VX, "dst", "192.0.2.97", "self", "permanent")
        assert "extern_learn" not in fdb(lab, h1)[h2.guest_mac].get("flags", [])
        assert "protocol" not in neigh(lab, h1)[h2.guest_ip4]
        ov.start(h1)
        lab.wait_ready(h1)
        f, n = fdb(lab, h1), neigh(lab, h1)
        assert "extern_learn" in f[h2.guest_mac].get("flags", []) and f[h2.guest_mac]["dst"] == h2.underlay_ip
        assert n[h2.guest_ip4].get("protocol") == "118" and n[h2.guest_ip4]["lladdr"] == h2.guest_mac
        assert f.get(gone, {}).get("dst") == "192.0.2.97"
        assert "event=adopted fdb=1" in ov.log_text(h1)
    finally:
        lab.exec(ns, "bridge", "fdb", "del", gone, "dev", VX, "self", check=False)
        if lab.daemons[h1.name].proc.poll() is not None:
            ov.start(h1)
            lab.wait_ready(h1)


def test_sigterm_while_a_burst_of_repairs_is_in_flight_stops_cleanly(ov, tmp_path):
    """2000 entries deleted behind the daemon's back in one burst and SIGTERM while they come back
    (what bench fig5 does between a push and a static round): exit 0 within a second or two, no
    error logged, and the daemon leaves the kernel alone once stopped."""
    lab, h1, h2, h3 = ov.lab, ov.h1, ov.h2, ov.h3
    ns = lab.host_ns(h1)
    many = [(f"02:d1:41:00:{i >> 8:02x}:{i & 255:02x}", {"ip": (h2 if i % 2 else h3).underlay_ip, "port": 4789})
            for i in range(2000)]
    ov.write_hosts(many, only=h1)
    try:
        wait_for(lambda: all(m in fdb(lab, h1) for m, _ in many[::97]) and len(fdb(lab, h1)) >= 2000, 10,
                 "the 2000 extra entries pushed")
        batch = tmp_path / "fdb.batch"
        batch.write_text("".join(f"fdb del {m} dev {VX} self\n" for m, _ in many))
        log_before = len(ov.log_text(h1))
        burst = lab.popen(ns, "bridge", "-batch", str(batch))
        time.sleep(0.05)  # the first repairs are being sent, most deletions still to come
        proc = lab.daemons[h1.name].proc
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(10)
        took = time.monotonic() - t0
        burst.wait(30)
        tail = ov.log_text(h1)[log_before:]
        print(f"\n[drift] SIGTERM during a 2000-entry delete burst: exit {rc} in {took * 1000:.0f} ms; "
              f"{tail.count('event=drift-repaired')} repair batches logged")
        assert rc == 0, tail[-2000:]
        assert took < 3, f"stopped in {took:.1f} s"
        assert "level=ERROR" not in tail and "Traceback" not in tail, tail[-2000:]
        left = len(fdb(lab, h1))
        time.sleep(0.3)
        assert len(fdb(lab, h1)) == left, "entries still being programmed after the daemon exited"
    finally:
        ov.write_hosts(only=h1)
        if lab.daemons[h1.name].proc.poll() is not None:
            ov.start(h1)
            lab.wait_ready(h1)
        wait_for(lambda: not any(m in fdb(lab, h1) for m, _ in many[::97]), 10, "the extra entries gone again")
