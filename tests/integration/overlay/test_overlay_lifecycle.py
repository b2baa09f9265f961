"""A running push-mode overlay under change: kernel drift, live mapping edits, daemon restarts,
bad input. One lab for the module; every test leaves it as it found it (autouse `_restore`).
"""
from __future__ import annotations

import re
import signal
import time

import pytest

from varpd.lab import HostSpec, write_hosts_json

from _overlay_helpers import fdb, neigh, overlay_lab, ping, ping_stats, remote_fdb_ok, remote_neigh_ok, wait_for


@pytest.fixture(scope="module")
def ov(tmp_path_factory):
    with overlay_lab(tmp_path_factory.mktemp("life"), tag="l", mode="push") as ov:
        for h in ov.hosts:
            wait_for(lambda: remote_fdb_ok(ov.lab, h, ov.remotes(h)), 5, f"{h.name}: pushed entries")
        yield ov


@pytest.fixture(autouse=True)
def _restore(ov):
    yield
    ov.write_hosts()
    for h in ov.hosts:
        if ov.lab.daemons[h.name].proc.poll() is not None:
            ov.start(h)
            ov.lab.wait_ready(h)


def test_reconcile_repairs_kernel_drift(ov):
    lab, h1, ns = ov.lab, ov.h1, ov.lab.host_ns(ov.h1)
    lab.exec(ns, "bridge", "fdb", "del", ov.h2.guest_mac, "dev", "vx23", "self")
    # a stray entry carrying varpd's mark (extern_learn): the reconciler's to remove (unmarked ones
    # survive: test_drift_repair)
    lab.exec(ns, "bridge", "fdb", "add", "02:00:00:00:00:99", "dev", "vx23", "dst", "192.0.2.99", "self", "permanent",
             "extern_learn")
    lab.exec(ns, "ip", "neigh", "del", ov.h3.guest_ip4, "dev", "vx23")
    # (the deleted entries may be back already: drift repair answers the kernel's events at once)

    def repaired():
        f = fdb(lab, h1)
        return (f.get(ov.h2.guest_mac, {}).get("dst") == ov.h2.underlay_ip and "02:00:00:00:00:99" not in f
                and remote_neigh_ok(lab, h1, ov.remotes(h1)))

    wait_for(repaired, 5, "reconcile to restore the deleted entries and remove the bogus one")


def test_live_reload_adds_and_removes_a_guest(ov):
    lab, h1, h3 = ov.lab, ov.h1, ov.h3
    g4 = HostSpec("host3", h3.underlay_ip, "de:ad:be:ef:00:03", "10.55.55.5", "fe80::6")
    gns = lab.add_guest(h3, mac=g4.guest_mac, ip4=g4.guest_ip4, ip6=g4.guest_ip6, vnic="vnic1", tag="guest4")
    try:
        lab.attach_guest(h3, vnic="vnic1", timeout=2)
        ov.write_hosts(extra=[g4])
        wait_for(lambda: remote_fdb_ok(lab, h1, [g4]) and remote_neigh_ok(lab, h1, [g4]), 5,
                 "host1 to program the new guest after hosts.json changed")
        ping(lab, ov.g(h1), g4.guest_ip4)
        ping(lab, ov.g(h1), g4.guest_ip6, v6=True)
        ping(lab, gns, ov.h2.guest_ip4)

        ov.write_hosts()

        def gone():
            f, n = fdb(lab, h1), neigh(lab, h1)
            return g4.guest_mac not in f and g4.guest_ip4 not in n and g4.guest_ip6 not in n

        wait_for(gone, 5, "host1 to remove the deleted guest's FDB/neighbour entries")
        assert remote_fdb_ok(lab, h1, ov.remotes(h1))  # the others are untouched
    finally:
        lab.remove_guest(gns)


def test_kill_9_and_restart_keeps_traffic_flowing(ov):
    lab, h2 = ov.lab, ov.h2
    # settle first: an earlier test's mapping edit may still be reaching host2
    expected = {r.guest_mac for r in ov.remotes(h2)}
    wait_for(lambda: set(fdb(lab, h2)) == expected, 5, "host2's FDB to hold exactly the mapping")
    before = fdb(lab, h2)
    flow = lab.popen(ov.g(ov.h1), "ping", "-n", "-c", "40", "-i", "0.1", "-W", "1", h2.guest_ip4)
    time.sleep(0.5)
    assert lab.stop_varpd(h2, signal.SIGKILL) == -signal.SIGKILL
    after_kill = fdb(lab, h2)
    assert {m: e["dst"] for m, e in after_kill.items()} == {m: e["dst"] for m, e in before.items()}, \
        "FDB changed when the daemon was killed"
    ov.start(h2)
    lab.wait_ready(h2)
    after_restart = fdb(lab, h2)
    assert all(after_restart.get(m, {}).get("dst") == e["dst"] for m, e in before.items()), \
        f"restart flushed entries: {before} → {after_restart}"
    out, err = flow.communicate(timeout=20)
    sent, received = ping_stats(out)
    assert received >= sent - 2, f"traffic interrupted by the restart:\n{out}{err}"
    # the new daemon reconciles: drift on host2 is repaired
    lab.exec(lab.host_ns(h2), "bridge", "fdb", "del", ov.h1.guest_mac, "dev", "vx23", "self")
    wait_for(lambda: remote_fdb_ok(lab, h2, ov.remotes(h2)), 5, "restarted daemon to reconcile")
    ping(lab, ov.g(h2), ov.h3.guest_ip4)


BAD_FILES = [
    # (id, make the bad text from the good one, regexes the complaint line must match besides the file name)
    ("bad-json", lambda good: good[: len(good) // 2], []),
    ("missing-ip", lambda good: good.replace('"ip": "192.0.2.2",', ""), [r"de:ad:be:ef:00:01", r"\bip\b"]),
    ("bad-mac", lambda good: good.replace('"de:ad:be:ef:00:02"', '"de:ad:be:ef:00:zz"'), [r"de:ad:be:ef:00:zz"]),
    ("port-70000", lambda good: good.replace('"port": 4789', '"port": 70000', 1),
     [r"de:ad:be:ef:00:00", r"\bport\b"]),
]


@pytest.mark.parametrize("name,mangle,tokens", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_hosts_json_is_refused_and_logged(ov, name, mangle, tokens):
    lab, h1, path = ov.lab, ov.h1, ov.hosts_json[ov.h1.name]
    good = path.read_text()
    bad = mangle(good)
    assert bad != good, "the mangling did not change the file"
    offset = len(ov.log_text(h1))
    tmp = path.with_name(".bad.tmp")
    tmp.write_text(bad)
    tmp.replace(path)

    def complaint():
        for line in ov.log_text(h1)[offset:].splitlines():
            if "hosts.json" in line and all(re.search(t, line) for t in tokens):
                return line
        return None

    try:
        line = wait_for(complaint, 5, f"a log line naming hosts.json and {tokens}")
        assert "Traceback" not in ov.log_text(h1)[offset:], "a bad file must not produce a traceback"
        res = lab.varpd_cli(h1, "show-overlay")
        assert res.returncode == 0 and "vx23" in res.stdout, res.stderr
        assert lab.daemons[h1.name].proc.poll() is None
        # the previous good mapping stays in force
        assert remote_fdb_ok(lab, h1, ov.remotes(h1)) and remote_neigh_ok(lab, h1, ov.remotes(h1)), line
        ping(lab, ov.g(h1), ov.h2.guest_ip4, attempts=2)
        ping(lab, ov.g(h1), ov.h3.guest_ip6, v6=True, attempts=2)
    finally:
        ov.write_hosts(only=h1)
    time.sleep(1.2)  # let the good file be read back before the next mangling
    assert remote_fdb_ok(lab, h1, ov.remotes(h1))


@pytest.mark.parametrize("args,mentions", [
    (["-s", "nope", "-p", "vxlan/listen_ip=192.0.2.1"], "nope"),
    (["-s", "files", "-p", "vxlan/listen_ip=192.0.2.1", "-p", "files/config=HOSTS", "-p", "files/nope=1"],
     "files/nope"),
], ids=["unknown-plugin", "unknown-property"])
def test_create_overlay_rejects_bad_input(ov, args, mentions):
    lab, h1 = ov.lab, ov.h1
    args = [a.replace("HOSTS", str(ov.hosts_json[h1.name])) for a in args]
    res = lab.varpd_cli(h1, "create-overlay", "-v", "99", "-e", "vxlan", *args, "vx99")
    assert res.returncode != 0, res.stdout
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and mentions in err, f"want one line mentioning {mentions!r}, got:\n{err}"
    assert lab.exec(lab.host_ns(h1), "ip", "link", "show", "vx99", check=False).returncode != 0
    assert lab.varpd_cli(h1, "show-overlay", "vx23").returncode == 0


def test_device_deleted_behind_our_back_comes_back_programmed(ov):
    lab, h1, ns = ov.lab, ov.h1, ov.lab.host_ns(ov.h1)
    lab.exec(ns, "ip", "link", "del", "vx23")
    wait_for(lambda: lab.exec(ns, "ip", "link", "show", "vx23", check=False).returncode == 0, 5, "vx23 re-created")
    wait_for(lambda: remote_fdb_ok(lab, h1, ov.remotes(h1)) and remote_neigh_ok(lab, h1, ov.remotes(h1)), 5,
             "entries re-programmed on the new device")
    assert "master br0" in lab.exec(ns, "ip", "link", "show", "vx23").stdout
    ping(lab, ov.g(h1), ov.h2.guest_ip4)


def test_cli_created_overlay_is_saved_and_comes_back_after_restart(ov):
    lab, h1, ns = ov.lab, ov.h1, ov.lab.host_ns(ov.h1)
    hosts_json = str(ov.hosts_json[h1.name])
    res = lab.varpd_cli(h1, "create-overlay", "-v", "24", "-e", "vxlan", "-s", "files",
                        "-p", f"vxlan/listen_ip={h1.underlay_ip},files/config={hosts_json}", "-b", "br24", "vx24")
    assert res.returncode == 0, res.stderr
    assert "vx24" in lab.exec(ns, "ip", "link", "show", "vx24").stdout
    wait_for(lambda: set(fdb(lab, h1, "vx24")) == {r.guest_mac for r in ov.remotes(h1)}, 5, "vx24 programmed")
    dup = lab.varpd_cli(h1, "create-overlay", "-v", "24", "-s", "files",
                        "-p", f"vxlan/listen_ip={h1.underlay_ip},files/config={hosts_json}", "vx25")
    assert dup.returncode == 1 and "VNI 24" in dup.stderr

    lab.stop_varpd(h1, signal.SIGKILL)
    ov.start(h1)
    lab.wait_ready(h1)
    res = lab.varpd_cli(h1, "show-overlay", "-f", "-p", "-o", "link,status")
    assert sorted(res.stdout.split()) == ["vx23:ONLINE", "vx24:ONLINE"], res.stdout + res.stderr

    assert lab.varpd_cli(h1, "delete-overlay", "vx24").returncode == 0
    assert lab.exec(ns, "ip", "link", "show", "vx24", check=False).returncode != 0
    assert lab.exec(ns, "ip", "link", "show", "br24", check=False).returncode != 0, "varpd made br24: it must go"
    lab.stop_varpd(h1)
    ov.start(h1)
    lab.wait_ready(h1)
    assert lab.varpd_cli(h1, "show-overlay", "-f", "-p", "-o", "link").stdout.split() == ["vx23"]
    missing = lab.varpd_cli(h1, "delete-overlay", "vx24")
    assert missing.returncode == 1 and "overlay 'vx24' not found" in missing.stderr


def test_modify_overlay_sets_drops_deletes_and_flushes_kernel_entries(ov):
    lab, h1, h2, h3 = ov.lab, ov.h1, ov.h2, ov.h3
    cli = lambda *a: lab.varpd_cli(h1, *a)  # noqa: E731
    try:
        res = cli("modify-overlay", "-s", f"{h2.guest_mac}=192.0.2.99:4790", "vx23")
        assert res.returncode == 0, res.stderr
        wait_for(lambda: fdb(lab, h1).get(h2.guest_mac, {}).get("dst") == "192.0.2.99", 5, "hand-set entry")
        assert fdb(lab, h1)[h2.guest_mac].get("port") == 4790
        res = cli("modify-overlay", "-s", f"{h3.guest_mac}=drop", "vx23")
        assert res.returncode == 0, res.stderr
        wait_for(lambda: h3.guest_mac not in fdb(lab, h1) and h3.guest_ip4 not in neigh(lab, h1), 5, "drop")
        rows = cli("show-overlay", "-t", "-p", "-o", "target,destination,origin", "vx23").stdout.splitlines()
        assert f"{h3.guest_mac}:drop:manual".replace(":", "\\:", 5) in rows, rows
        # both survive the reconciler and a restart of the daemon
        cli("reconcile", "vx23")
        lab.stop_varpd(h1, signal.SIGKILL)
        ov.start(h1)
        lab.wait_ready(h1)
        time.sleep(1.5)
        assert fdb(lab, h1)[h2.guest_mac]["dst"] == "192.0.2.99" and h3.guest_mac not in fdb(lab, h1)
        # -d returns one MAC to the mapping; -f all of them
        assert cli("modify-overlay", "-d", h3.guest_mac, "vx23").returncode == 0
        wait_for(lambda: remote_fdb_ok(lab, h1, [h3]) and remote_neigh_ok(lab, h1, [h3]), 5, "-d restores")
        assert cli("modify-overlay", "-f", "vx23").returncode == 0
        wait_for(lambda: remote_fdb_ok(lab, h1, ov.remotes(h1)), 5, "-f restores the mapping")
        bad = cli("modify-overlay", "-s", "zz:zz=192.0.2.9", "vx23")
        assert bad.returncode == 1 and "mac" in bad.stderr, bad.stderr
        bad = cli("modify-overlay", "-s", f"{h2.guest_mac}=nowhere", "vx23")
        assert bad.returncode == 1 and "not an IP address" in bad.stderr, bad.stderr
    finally:
        cli("modify-overlay", "-f", "vx23")


def test_set_overlayprop_changes_a_live_overlay_without_flushing(ov):
    lab, h1, h2, h3 = ov.lab, ov.h1, ov.h2, ov.h3
    cli = lambda *a: lab.varpd_cli(h1, *a)  # noqa: E731
    original = str(ov.hosts_json[h1.name])
    alt = ov.hosts_json[h1.name].with_name("hosts-alt.json")
    write_hosts_json(alt, [h1, h2])  # h3 is not in the other mapping
    try:
        before = fdb(lab, h1)[h2.guest_mac]
        res = cli("set-overlayprop", "-p", f"files/config={alt}", "vx23")
        assert res.returncode == 0, res.stderr
        wait_for(lambda: h3.guest_mac not in fdb(lab, h1), 5, "h3 withdrawn after the mapping changed")
        assert fdb(lab, h1)[h2.guest_mac] == before  # untouched, never flushed
        shown = cli("show-overlay", "-p", "-o", "property,value", "vx23").stdout.splitlines()
        assert f"files/config:{alt}" in shown
        ro = cli("set-overlayprop", "-p", "vxlan/listen_port=4790", "vx23")
        assert ro.returncode == 1 and "read-only" in ro.stderr, ro.stderr
        bad = cli("set-overlayprop", "-p", "files/reload_interval=abc", "vx23")
        assert bad.returncode == 1 and "files/reload_interval" in bad.stderr, bad.stderr
        status = cli("show-overlay", "-f", "-p", "-o", "link,status", "vx23").stdout.split()
        assert status == ["vx23:ONLINE"]
    finally:
        assert cli("set-overlayprop", "-p", f"files/config={original}", "vx23").returncode == 0
    wait_for(lambda: remote_fdb_ok(lab, h1, ov.remotes(h1)), 5, "the original mapping back")


def test_device_without_an_instance_is_degraded_then_deleted(ov):
    lab, h1, ns = ov.lab, ov.h1, ov.lab.host_ns(ov.h1)
    hosts_json = str(ov.hosts_json[h1.name])
    res = lab.varpd_cli(h1, "create-overlay", "-v", "26", "-s", "files", "-b", "br26",
                        "-p", f"vxlan/listen_ip={h1.underlay_ip},files/config={hosts_json}", "vx26")
    assert res.returncode == 0, res.stderr
    lab.stop_varpd(h1)
    (ov.configs[h1.name].parent / "state" / "overlays" / "vx26.json").unlink()  # the overlay is forgotten
    ov.start(h1)
    lab.wait_ready(h1)
    status = lab.varpd_cli(h1, "show-overlay", "-f", "-p", "-o", "link,status,details", "vx26").stdout
    assert status.startswith("vx26:DEGRADED:no varpd instance exists"), status
    assert lab.exec(ns, "ip", "link", "show", "vx26", check=False).returncode == 0, "never deleted silently"
    health = lab.api(h1, "/v1/health")[1]
    assert health["degraded"] == ["vx26"], health
    assert lab.varpd_cli(h1, "delete-overlay", "vx26").returncode == 0
    assert lab.exec(ns, "ip", "link", "show", "vx26", check=False).returncode != 0
    assert lab.exec(ns, "ip", "link", "show", "br26", check=False).returncode != 0
    assert lab.varpd_cli(h1, "show-overlay", "-f", "-p", "-o", "link").stdout.split() == ["vx23"]


def test_changed_ip_is_announced_to_local_guests(ov):
    lab, h1, h3 = ov.lab, ov.h1, ov.h3
    cap = lab.popen(ov.g(h1), "tcpdump", "-i", "eth0", "-n", "-l", "-c", "2", "-Z", "root",
                    "arp or icmp6[icmp6type] == 136")
    try:
        time.sleep(0.5)
        moved = HostSpec(h3.name, h3.underlay_ip, h3.guest_mac, "10.55.55.44", "fe80::44")
        ov.write_hosts(extra=[moved])  # h3's record now owns other addresses
        out, _ = cap.communicate(timeout=10)
    finally:
        if cap.poll() is None:
            cap.kill()
    assert "10.55.55.44" in out and "fe80::44" in out, out
