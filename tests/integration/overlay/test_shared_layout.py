"""vxlan_layout = "shared" on a kernel without VLAN filtering: the daemon says why in one line and
leaves nothing in the kernel (no shared bridge, no shared or per-VNI device), and keeps serving."""
from __future__ import annotations

import json
import subprocess

import pytest

from varpd.lab import Lab, seed_hosts, session_prefix, write_hosts_json, write_varpd_config

from _overlay_helpers import wait_for

pytestmark = pytest.mark.integration


def _vlan_filtering_missing(ns: str) -> bool:
    probe = subprocess.run(["ip", "-n", ns, "link", "add", "s14bp", "type", "bridge", "vlan_filtering", "1"],
                           capture_output=True)
    if probe.returncode == 0:
        subprocess.run(["ip", "-n", ns, "link", "del", "s14bp"], capture_output=True)
    return probe.returncode != 0


def test_shared_layout_refused_in_one_line_without_vlan_filtering(tmp_path):
    hosts = seed_hosts(1)
    h1 = hosts[0]
    lab = Lab(hosts, prefix=session_prefix("s14-", "sh"))
    try:
        lab.up()
        if not _vlan_filtering_missing(lab.host_ns(h1)):
            pytest.skip("this kernel has VLAN filtering")
        (tmp_path / "state").mkdir()
        write_hosts_json(tmp_path / "hosts.json", hosts)
        cfg = write_varpd_config(tmp_path / "varpd.toml", h1, hosts_json=tmp_path / "hosts.json",
                                 state_dir=tmp_path / "state", sock=tmp_path / "varpd.sock",
                                 daemon={"vxlan_layout": "shared", "shared_device": "s14vxs",
                                         "shared_bridge": "s14brs"})
        lab.start_varpd(h1, cfg)
        lab.wait_ready(h1)
        line = "overlay=vx23 event=start-failed error=vxlan_layout=shared needs a VLAN-aware bridge"
        wait_for(lambda: line in lab.log_path(h1).read_text(), 5, "the refusal")
        text = next(ln for ln in lab.log_path(h1).read_text().splitlines() if line in ln)
        assert "CONFIG_BRIDGE_VLAN_FILTERING" in text and text.endswith("use vxlan_layout=per-vni action=retry")
        names = {link["ifname"] for link in json.loads(lab.exec(lab.host_ns(h1), "ip", "-j", "link", "show").stdout)}
        assert not names & {"s14vxs", "s14brs", "vx23"}
        status, _body = lab.api(h1, "/v1/health")
        assert status == 200
    finally:
        lab.down()
