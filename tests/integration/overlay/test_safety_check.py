"""The periodic safety pass finds what no kernel event announced (issue #14: the check in place of
a full pass every reconcile_interval).

The daemon here is deaf to the kernel's change events (a wrapper replaces KernelSync.on_change
before varpd's own CLI runs): an entry changed behind its back is then exactly an entry changed
without an event, and only the safety pass can put it back.  A quiet safety pass is a check,
not a full pass.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from varpd.lab.topology import HostSpec, Lab, session_prefix, write_hosts_json, write_varpd_config

from _overlay_helpers import wait_for

pytestmark = pytest.mark.integration

VX = "vx23"
HOST = HostSpec("host1", "192.0.2.1", "de:ad:be:ef:00:01", "10.55.55.1", "fe80::1")
REMOTES = [(f"02:d5:00:00:00:{i:02x}", {"ip": "192.0.2.2", "port": 4789, "arp": f"10.55.56.{i + 1}"})
           for i in range(20)]
DEAF = """import sys
from varpd.daemon.kernel_sync import KernelSync
KernelSync.on_change = lambda self, ev: None  # deaf to kernel events: drift is left to the safety pass
sys.argv = sys.argv[1:]
from varpd.cli.main import console
console()
"""


def counters(lab: Lab) -> dict:
    return lab.api(HOST, f"/v1/overlays/{VX}")[1]["counters"]


def fdb_dst(lab: Lab, mac: str) -> str | None:
    for line in lab.exec(lab.host_ns(HOST), "bridge", "fdb", "show", "dev", VX).stdout.splitlines():
        words = line.split()
        if words and words[0] == mac and "dst" in words:
            return words[words.index("dst") + 1]
    return None


def neigh_mac(lab: Lab, ip: str) -> str | None:
    words = lab.exec(lab.host_ns(HOST), "ip", "neigh", "show", ip, "dev", VX).stdout.split()
    return words[words.index("lladdr") + 1] if "lladdr" in words else None


@pytest.fixture
def lab(tmp_path: Path):
    lab = Lab([HOST], prefix=session_prefix("pc-", "sc"))
    try:
        lab.up()
        hosts = tmp_path / "hosts.json"
        write_hosts_json(hosts, [HOST], REMOTES)
        (tmp_path / "state").mkdir()
        cfg = write_varpd_config(tmp_path / "varpd.toml", HOST, hosts_json=hosts, state_dir=tmp_path / "state",
                                 sock=tmp_path / "varpd.sock", mode="push", overlay=VX, reconcile_interval=0.5,
                                 log_level="info")
        deaf = tmp_path / "deaf.py"
        deaf.write_text(DEAF)
        lab.start_varpd(HOST, cfg, wrapper=(sys.executable, str(deaf)))
        lab.wait_ready(HOST)
        yield lab
    finally:
        lab.down()


def test_an_entry_changed_without_an_event_is_repaired_by_the_safety_pass(lab):
    mac, rec = REMOTES[3]
    wait_for(lambda: counters(lab).get("checks", 0) >= 2, 10, "two quiet safety passes")
    quiet = counters(lab)
    assert quiet.get("reconciles") == 1 and not quiet.get("check_differences"), quiet  # the start pass only
    ns = lab.host_ns(HOST)
    lab.exec(ns, "bridge", "fdb", "replace", mac, "dev", VX, "dst", "192.0.2.99", "self", "permanent")
    lab.exec(ns, "ip", "neigh", "replace", REMOTES[4][1]["arp"], "lladdr", "02:d5:00:00:00:99", "dev", VX,
             "nud", "permanent", "protocol", "118")
    wait_for(lambda: fdb_dst(lab, mac) == rec["ip"] and neigh_mac(lab, REMOTES[4][1]["arp"]) == REMOTES[4][0], 10,
             "the safety pass to put both entries back")
    after = counters(lab)
    assert after.get("check_differences", 0) >= 1 and after.get("reconciles", 0) >= 2, after
    assert after.get("reconcile_repairs", 0) >= 1 and not after.get("drift_repairs"), after
