"""A daemon with 200 overlays (issue #14): it starts, programs every overlay's entries, follows an
edit of one overlay's hosts.json through inotify, answers its API, and stops cleanly; its
per-overlay cost is one netlink socket (no timer, no thread, no inotify instance per overlay)."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from _overlay_helpers import wait_for
from varpd.lab import HostSpec, Lab
from varpd.lab.topology import run

pytestmark = pytest.mark.integration

COUNT = 200
RECORDS = 3
HOST = HostSpec("host1", "192.0.2.1", "de:ad:be:ef:01:00", "10.55.55.2", "fe80::3")


def mac(o: int, i: int) -> str:
    return f"02:14:{o >> 8:02x}:{o & 0xff:02x}:00:{i:02x}"


def records(o: int, remote: str = "192.0.2.7") -> dict:
    return {mac(o, i): {"ip": remote, "port": 4789, "arp": f"10.{o >> 8}.{o & 0xff}.{i + 1}"} for i in range(RECORDS)}


def write_config(tmp: Path) -> Path:
    lines = ["[daemon]", f'state_dir = "{tmp / "state"}"', f'socket = "{tmp / "varpd.sock"}"',
             "reconcile_interval = 3600.0", 'log_level = "info"', ""]
    (tmp / "maps").mkdir()
    for o in range(COUNT):
        hosts = tmp / "maps" / f"o{o}.json"
        hosts.write_text(json.dumps(records(o)))
        lines += ["[[overlays]]", f'name = "m14o{o}"', f"vni = {14000 + o}", 'search = "files"', 'mode = "push"',
                  "[overlays.properties]", f'"vxlan/listen_ip" = "{HOST.underlay_ip}"', f'"files/config" = "{hosts}"', ""]
    path = tmp / "varpd.toml"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("m14many")
    (tmp / "state").mkdir()
    lab = Lab([HOST], prefix=f"m14-{os.getpid()}-")
    lab.up()
    try:
        config = write_config(tmp)
        t0 = time.monotonic()
        proc = lab.start_varpd(HOST, config)
        lab.wait_ready(HOST, timeout=180)
        yield lab, proc, tmp, time.monotonic() - t0
    finally:
        lab.down()


def fdb_by_device(lab: Lab) -> dict[str, dict[str, str]]:
    out = run("bridge", "-n", lab.host_ns(HOST), "-j", "fdb", "show").stdout
    table: dict[str, dict[str, str]] = {}
    for e in json.loads(out or "[]"):
        if e.get("dst") and e.get("ifname", "").startswith("m14o"):
            table.setdefault(e["ifname"], {})[e["mac"]] = e["dst"]
    return table


def test_every_overlay_is_online_with_its_entries(many):
    lab, proc, _, took = many
    status, body = lab.api(HOST, "/v1/overlays", timeout=10)
    assert status == 200
    rows = body if isinstance(body, list) else body.get("overlays", [])
    assert len(rows) == COUNT and {r["status"] for r in rows} == {"ONLINE"}, took
    table = fdb_by_device(lab)
    assert len(table) == COUNT
    assert all(table[f"m14o{o}"] == {mac(o, i): "192.0.2.7" for i in range(RECORDS)} for o in range(COUNT))


def test_per_overlay_cost_is_one_socket_and_no_thread(many):
    lab, proc, _, _ = many
    pid = proc.pid
    fds = os.listdir(f"/proc/{pid}/fd")
    links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds if os.path.exists(f"/proc/{pid}/fd/{fd}")]
    inotify = sum(1 for link in links if "inotify" in link)
    assert inotify == 1  # one instance for 200 files
    assert len(fds) <= COUNT + 30, f"{len(fds)} fds for {COUNT} overlays"
    assert len(os.listdir(f"/proc/{pid}/task")) <= 8  # the loop and a few pool threads, none per overlay


def test_an_edit_of_one_overlay_reaches_its_device(many):
    lab, _, tmp, _ = many
    hosts = tmp / "maps" / "o123.json"
    new = tmp / "maps" / ".o123.json.new"
    new.write_text(json.dumps(records(123, remote="192.0.2.9")))
    os.replace(new, hosts)
    wait_for(lambda: fdb_by_device(lab)["m14o123"].get(mac(123, 0)) == "192.0.2.9", timeout=5,
             what="the edited overlay's entries moved")
    table = fdb_by_device(lab)
    assert set(table["m14o123"].values()) == {"192.0.2.9"}
    assert set(table["m14o122"].values()) == {"192.0.2.7"}  # the others untouched


def test_stops_cleanly(many):
    lab, proc, tmp, _ = many
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    took = time.monotonic() - t0
    log = lab.log_path(HOST).read_text(errors="replace")
    assert "Traceback" not in log and "level=ERROR" not in log, log[-2000:]
    assert not (tmp / "varpd.sock").exists()
    assert took < 30, f"stop took {took:.1f} s"
