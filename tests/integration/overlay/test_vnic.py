"""VNICs made by the daemon (create-vnic, show-vnic, delete-vnic): a namespace guest that pings a
remote guest, its port protection, a tap for a VM, persistence across a restart, re-creation after
the namespace and the pair are gone (a reboot), refusals that leave nothing behind.

The lab's daemons run under `ip netns exec`, whose private mount namespace (a slave of the host's,
like varpd.service's sandbox) sees namespaces the host makes but would keep one the daemon made from
everyone else: the daemon refuses to make one there, the namespaces are made by the host first
(as varpd-netns@.service does at boot).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _overlay_helpers import fdb, overlay_lab, ping_stats, wait_for
from varpd.lab import HostSpec

MAC = "de:ad:be:ef:01:00"
# configs/varpd.service's capabilities (util-linux setpriv), its mount namespace being a slave of the
# host's like the one `ip netns exec` gives the lab's daemons
UNIT_CAPS = ("setpriv", "--bounding-set", "-all,+net_admin,+net_raw,+sys_admin")
NO_SYS_ADMIN = ("setpriv", "--bounding-set", "-all,+net_admin,+net_raw")
IP4, IP6 = "10.55.55.20", "fe80::20"


@pytest.fixture(scope="module")
def ov(tmp_path_factory):
    with overlay_lab(tmp_path_factory.mktemp("vnic"), tag="vn", mode="push") as ov:
        ov.write_hosts(extra=[HostSpec("host1", ov.h1.underlay_ip, MAC, IP4, IP6)])
        ov.wait_pushed()
        for h in (ov.h2, ov.h3):  # every daemon has re-read the mapping with the new guest
            wait_for(lambda: MAC in fdb(ov.lab, h), 10, f"{h.name}: the new guest's entry")
        wait_for(lambda: ov.lab.varpd_cli(ov.h1, "lookup-overlay", "-F", "-p", "-o", "answer", "vx23", MAC)
                 .stdout.strip() not in ("", "unknown"), 10, "host1: the new guest in its mapping")
        yield ov


def cli(ov, *args: str) -> subprocess.CompletedProcess:
    return ov.lab.varpd_cli(ov.h1, *args)


def ok(ov, *args: str) -> str:
    res = cli(ov, *args)
    assert res.returncode == 0, f"varpd {' '.join(args)}: {res.stderr}{ov.lab.log_tail(ov.h1)}"
    return res.stdout


def host1(ov, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return ov.lab.exec(ov.lab.host_ns(ov.h1), *cmd, check=check)


def port(ov, name: str) -> dict:
    """learning/locked of the bridge port and the MACs pinned (static, sticky) on it."""
    links = json.loads(host1(ov, "bridge", "-d", "-j", "link", "show", "dev", name).stdout)
    fdb = json.loads(host1(ov, "bridge", "-j", "fdb", "show", "dev", name).stdout)
    return {"master": links[0].get("master"), "learning": links[0].get("learning"), "locked": links[0].get("locked"),
            "pinned": sorted(e["mac"] for e in fdb if e.get("state") == "static" and "sticky" in e.get("flags", []))}


def vx_mtu(ov) -> int:
    return json.loads(host1(ov, "ip", "-j", "link", "show", "vx23").stdout)[0]["mtu"]


def in_guest(ns_path: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={ns_path}", *cmd], capture_output=True, text=True, timeout=30,
                          check=check)


def guest_pings(ns_path: str, dst: str) -> bool:
    target = f"{dst}%eth0" if dst.startswith("fe80:") else dst
    for _ in range(5):
        if in_guest(ns_path, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", target, check=False).returncode == 0:
            return True
    return False


def show(ov, name: str) -> list[str]:
    """STATUS, WARNING, MTU, MACADDRESS of the parseable output, unescaped."""
    line = ok(ov, "show-vnic", "-p", "-o", "status,warning,mtu,macaddress", name).strip()
    return [f.replace("\\:", ":") for f in re.split(r"(?<!\\):", line)]


def state_file(ov, name: str) -> Path:
    return ov.workdir / "host1" / "state" / "vnics" / f"{name}.json"


def test_veth_vnic_pings_survives_restart_and_is_recreated_after_a_reboot(ov):
    lab, h1 = ov.lab, ov.h1
    gns = f"{lab.prefix}host1-v2"
    lab._add_ns(gns)  # an existing namespace (made here, visible to the daemon): it is used, not made
    out = ok(ov, "create-vnic", "-m", MAC.upper(), "-l", "vx23", "--netns", gns,
             "--address", f"{IP4}/24", "--address", f"{IP6}/64", "vnic2")
    assert "created vnic vnic2 on vx23" in out and "warning" not in out
    assert port(ov, "vnic2") == {"master": "br0", "learning": False, "locked": True, "pinned": [MAC]}
    gpath = f"/run/netns/{gns}"
    link = json.loads(in_guest(gpath, "ip", "-j", "-d", "link", "show", "dev", "eth0").stdout)[0]
    assert (link["address"], link["mtu"], link.get("inet6_addr_gen_mode")) == (MAC, vx_mtu(ov), "none")
    eth0 = json.loads(in_guest(gpath, "ip", "-j", "addr", "show", "dev", "eth0").stdout)[0]
    assert {a["local"] for a in eth0["addr_info"]} == {IP4, IP6}  # no EUI-64 link-local
    assert in_guest(gpath, "sysctl", "-n", "net.ipv6.conf.eth0.accept_dad").stdout.strip() == "0"
    assert show(ov, "vnic2") == ["UP", "--", str(vx_mtu(ov)), MAC]
    assert json.loads(state_file(ov, "vnic2").read_text())["vnic"]["netns"] == gns
    assert guest_pings(gpath, ov.h2.guest_ip4) and guest_pings(gpath, ov.h2.guest_ip6)

    # a restart: the pair is still there and is kept (its ifindex unchanged)
    ifindex = host1(ov, "cat", "/sys/class/net/vnic2/ifindex").stdout
    lab.stop_varpd(h1)
    ov.start(h1)
    lab.wait_ready(h1)
    assert host1(ov, "cat", "/sys/class/net/vnic2/ifindex").stdout == ifindex
    assert "vnic=vnic2 overlay=vx23 event=adopted" in ov.log_text(h1)
    assert show(ov, "vnic2")[0] == "UP"

    # a reboot: the daemon stops, the guest namespace and the pair are gone; at boot the namespace is
    # made again, empty (varpd-netns@.service: `ip netns add`, before varpd), and the daemon re-creates
    # the pair into it, configured and protected
    lab.stop_varpd(h1)
    lab.remove_guest(gns)
    wait_for(lambda: host1(ov, "ip", "link", "show", "vnic2", check=False).returncode != 0, 10, "the pair to go")
    lab._add_ns(gns)
    # without CAP_SYS_ADMIN it cannot enter the namespace (setns(2)): shown, nothing half made
    ov.start(h1, NO_SYS_ADMIN)
    lab.wait_ready(h1)
    status, warning, _, _ = show(ov, "vnic2")
    assert status == "MISSING" and "Operation not permitted" in warning, warning
    assert host1(ov, "ip", "link", "show", "vnic2", check=False).returncode != 0
    lab.stop_varpd(h1)
    ov.start(h1, UNIT_CAPS)
    lab.wait_ready(h1)
    assert "vnic=vnic2 overlay=vx23 event=re-created" in ov.log_text(h1)
    assert port(ov, "vnic2") == {"master": "br0", "learning": False, "locked": True, "pinned": [MAC]}
    link = json.loads(in_guest(gpath, "ip", "-j", "-d", "link", "show", "dev", "eth0").stdout)[0]
    assert (link["address"], link["mtu"], link.get("inet6_addr_gen_mode")) == (MAC, vx_mtu(ov), "none")
    eth0 = json.loads(in_guest(gpath, "ip", "-j", "addr", "show", "dev", "eth0").stdout)[0]
    assert {a["local"] for a in eth0["addr_info"]} == {IP4, IP6}
    assert show(ov, "vnic2")[0] == "UP"
    assert guest_pings(gpath, ov.h2.guest_ip4) and guest_pings(gpath, ov.h2.guest_ip6)

    res = cli(ov, "delete-overlay", "vx23")
    assert res.returncode == 1 and "has VNICs attached: vnic0, vnic2" in res.stderr  # the lab's guest too
    ok(ov, "delete-vnic", "vnic2")
    assert host1(ov, "ip", "link", "show", "vnic2", check=False).returncode != 0
    assert not state_file(ov, "vnic2").exists()
    assert cli(ov, "show-vnic", "vnic2").returncode == 1


def test_a_vnic_whose_namespace_goes_is_re_created_when_it_comes_back(ov):
    """No restart: the guest namespace deleted under a running daemon (a container runtime's, or
    `ip netns del`) takes the pair with it: MISSING, with the reason (the daemon may not make the
    namespace itself from its private mount namespace); once the host makes it again the pair is
    back, configured and protected, within the retry interval (the lab's: 1 s). A link deleted by
    hand comes back the same way."""
    lab, h1 = ov.lab, ov.h1
    gns, mac = f"{lab.prefix}host1-v3", "de:ad:be:ef:01:03"
    gpath = f"/run/netns/{gns}"
    lab._add_ns(gns)
    try:
        ok(ov, "create-vnic", "-m", mac, "-l", "vx23", "--netns", gns, "--address", "10.55.55.23/24", "vnic3")
        lab.remove_guest(gns)
        wait_for(lambda: show(ov, "vnic3")[0] == "MISSING", 10, "vnic3 MISSING after its namespace went")
        wait_for(lambda: "vnic=vnic3 overlay=vx23 event=retry-failed" in ov.log_text(h1), 10, "the failed retry")
        failed = [ln for ln in ov.log_text(h1).splitlines() if "vnic=vnic3 overlay=vx23 event=retry-failed" in ln]
        assert "create it first with `ip netns add" in failed[0], failed
        time.sleep(2.5)  # more retries, the same reason: logged once
        assert ov.log_text(h1).count("vnic=vnic3 overlay=vx23 event=retry-failed") == 1
        assert host1(ov, "ip", "link", "show", "vnic3", check=False).returncode != 0  # nothing half made
        lab._add_ns(gns)
        wait_for(lambda: show(ov, "vnic3")[0] == "UP", 10, "vnic3 UP once its namespace is back")
        assert port(ov, "vnic3") == {"master": "br0", "learning": False, "locked": True, "pinned": [mac]}
        eth0 = json.loads(in_guest(gpath, "ip", "-j", "addr", "show", "dev", "eth0").stdout)[0]
        assert eth0["address"] == mac and {a["local"] for a in eth0["addr_info"]} == {"10.55.55.23"}
        before = ov.log_text(h1).count("vnic=vnic3 overlay=vx23 event=re-created")
        host1(ov, "ip", "link", "del", "vnic3")
        wait_for(lambda: ov.log_text(h1).count("vnic=vnic3 overlay=vx23 event=re-created") > before, 10,
                 "vnic3 re-created after a hand delete")
        wait_for(lambda: show(ov, "vnic3")[0] == "UP", 10, "vnic3 UP again")
    finally:
        cli(ov, "delete-vnic", "vnic3")
        lab.remove_guest(gns)
    assert host1(ov, "ip", "link", "show", "vnic3", check=False).returncode != 0


def test_tap_vnic_is_protected_kept_across_restart_and_deleted(ov):
    lab, h1 = ov.lab, ov.h1
    ok(ov, "create-vnic", "--type", "tap", "-m", "de:ad:be:ef:01:01", "-l", "vx23", "--mtu", "1400", "tap2")
    try:
        link = json.loads(host1(ov, "ip", "-j", "-d", "link", "show", "tap2").stdout)[0]
        assert link["linkinfo"]["info_kind"] == "tun" and link["mtu"] == 1400  # --mtu wins over the overlay's
        assert link["address"] != "de:ad:be:ef:01:01"  # the VM's MAC is QEMU's, the tap keeps its own
        assert port(ov, "tap2") == {"master": "br0", "learning": False, "locked": True,
                                    "pinned": ["de:ad:be:ef:01:01"]}
        # not in the mapping: shown with a warning and logged
        status, warning, _, _ = show(ov, "tap2")
        assert status == "UP" and "not in overlay vx23's mapping" in warning
        assert "vnic=tap2 overlay=vx23 mac=de:ad:be:ef:01:01 event=mac-not-in-mapping" in ov.log_text(h1)
        lab.stop_varpd(h1)
        ov.start(h1)
        lab.wait_ready(h1)
        assert "vnic=tap2 overlay=vx23 event=adopted" in ov.log_text(h1)
        assert show(ov, "tap2")[0] == "UP"
        rows = ok(ov, "show-vnic", "-p", "-o", "link,over,type").split()
        assert "tap2:vx23:tap" in rows
    finally:
        cli(ov, "delete-vnic", "tap2")
    assert host1(ov, "ip", "link", "show", "tap2", check=False).returncode != 0


@pytest.mark.parametrize("args, premade, mentions", [
    (["-m", "01:00:5e:00:00:01", "--netns", "NS"], True, "multicast"),
    (["-m", MAC], False, "needs --netns"),
    (["-m", MAC, "--type", "tap", "--address", "10.55.55.30/24"], False, "takes no --netns or --address"),
    (["-m", MAC, "--netns", "NS", "--address", "10.55.55.30/24", "--address", "10.55.55.30/24"], True,
     "File exists"),
    # the daemon's private mount namespace (ip netns exec here, the unit's sandbox on a host): a
    # namespace it made would be seen by no one else
    (["-m", MAC, "--netns", "NS"], False, "create it first with `ip netns add"),
])
def test_failed_create_vnic_leaves_nothing(ov, args, premade, mentions):
    gns = f"{ov.lab.prefix}host1-bad"
    if premade:
        ov.lab._add_ns(gns)
    try:
        res = cli(ov, "create-vnic", "-l", "vx23", *[gns if a == "NS" else a for a in args], "vbad")
        assert res.returncode == 1 and mentions in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert host1(ov, "ip", "link", "show", "vbad", check=False).returncode != 0
        assert not state_file(ov, "vbad").exists()
        assert os.path.exists(f"/run/netns/{gns}") == premade  # a namespace it did not make is kept
        if premade:
            assert json.loads(subprocess.run(["ip", "-n", gns, "-j", "link"], capture_output=True, text=True,
                                             check=True).stdout) == [json.loads(subprocess.run(
                ["ip", "-n", gns, "-j", "link", "show", "lo"], capture_output=True, text=True).stdout)[0]]
        assert "vbad" not in ok(ov, "show-vnic", "-p", "-o", "link")
    finally:
        if premade:
            ov.lab.remove_guest(gns)


def test_a_netns_path_that_is_no_namespace_is_refused_and_kept(ov):
    """A mount point file whose namespace the daemon cannot see (another mount namespace's) is never
    unlinked: that would detach the namespace wherever it is mounted."""
    path = Path(f"/run/netns/{ov.lab.prefix}host1-file")
    path.touch()
    try:
        res = cli(ov, "create-vnic", "-l", "vx23", "-m", "de:ad:be:ef:01:02", "--netns", path.name, "vfile")
        assert res.returncode == 1 and "exists but is not a network namespace this daemon can see" in res.stderr
        assert path.exists() and host1(ov, "ip", "link", "show", "vfile", check=False).returncode != 0
        assert not state_file(ov, "vfile").exists()
    finally:
        path.unlink(missing_ok=True)


def test_a_vnic_guest_cannot_take_over_another_guests_mac(ov):
    """The forged-frame attack of test_hardening_overlay, from a guest behind a VNIC varpd made:
    frames with the victim's source MAC (unicast across the overlay, broadcast on its own bridge)
    are dropped at the locked port; the victim keeps its port and loses no traffic."""
    from test_hardening_overlay import _FORGE, _mac, bridge_port_of

    lab, victim = ov.lab, ov.h3
    gns = f"{lab.prefix}host1-atk"
    lab._add_ns(gns)
    ok(ov, "create-vnic", "-m", MAC, "-l", "vx23", "--netns", gns, "--address", f"{IP4}/24", "vatk")
    try:
        assert guest_pings(f"/run/netns/{gns}", victim.guest_ip4)
        assert bridge_port_of(ov, victim, victim.guest_mac) == "vnic0"
        v = _mac(victim.guest_mac)
        unicast, broadcast = v + v + b"\x88\xb5" + bytes(46), b"\xff" * 6 + v + b"\x88\xb5" + bytes(46)
        sender = subprocess.Popen(["ip", "netns", "exec", gns, sys.executable, "-c", _FORGE, "eth0", "4",
                                   unicast.hex(), broadcast.hex()], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)
            res = lab.exec(ov.g(ov.h2), "ping", "-n", "-c", "10", "-i", "0.2", "-W", "1", victim.guest_ip4,
                           check=False, timeout=20)
            seen = {h.name: bridge_port_of(ov, h, victim.guest_mac) for h in (ov.h1, victim)}
        finally:
            sender.wait(10)
        assert sender.returncode == 0, sender.stderr.read()
        assert seen == {"host1": seen["host1"], "host3": "vnic0"} and seen["host1"] != "vatk"
        assert ping_stats(res.stdout)[0] == ping_stats(res.stdout)[1], res.stdout
    finally:
        cli(ov, "delete-vnic", "vatk")
