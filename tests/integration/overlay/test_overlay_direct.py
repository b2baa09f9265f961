"""direct (POINT mode): two hosts joined point to point. One all-zeros FDB entry carries
everything, broadcast ARP included, so the guests resolve each other themselves."""

from __future__ import annotations

import pytest

from varpd.lab import Lab, seed_hosts
from varpd.lab.topology import session_prefix

from _overlay_helpers import ping, wait_for

pytestmark = pytest.mark.integration


def _config(path, host, peer, workdir) -> None:
    path.write_text(f"""
[daemon]
state_dir = "{workdir / host.name / 'state'}"
socket = "{workdir / host.name / 'varpd.sock'}"
reconcile_interval = 1.0
log_level = "debug"

[[overlays]]
name = "vx23"
vni = 23
search = "direct"
bridge = "br0"

[overlays.properties]
"vxlan/listen_ip" = "{host.underlay_ip}"
"direct/dest_ip" = "{peer.underlay_ip}"
""")


def test_point_to_point_overlay(tmp_path):
    hosts = seed_hosts(2, dhcp_proxy=False)
    lab = Lab(hosts, prefix=session_prefix("vt-", "d"))
    try:
        lab.up()
        for host, peer in ((hosts[0], hosts[1]), (hosts[1], hosts[0])):
            (tmp_path / host.name).mkdir()
            cfg = tmp_path / host.name / "varpd.toml"
            _config(cfg, host, peer, tmp_path)
            lab.start_varpd(host, cfg)
            lab.wait_ready(host)
            lab.attach_guest(host)
        words = lab.exec(lab.host_ns(hosts[0]), "ip", "-d", "link", "show", "vx23").stdout.split()
        assert "nolearning" in words and "proxy" not in words and "l2miss" not in words, words
        entries = lab.exec(lab.host_ns(hosts[0]), "bridge", "fdb", "show", "dev", "vx23").stdout
        assert "00:00:00:00:00:00 dst 192.0.2.2" in entries and "permanent" in entries
        ping(lab, lab.guest_ns(hosts[0]), hosts[1].guest_ip4)
        ping(lab, lab.guest_ns(hosts[1]), hosts[0].guest_ip6, v6=True)
        res = lab.varpd_cli(hosts[0], "show-overlay", "-f", "-p", "-o", "link,status,mode,plugin", "vx23")
        assert res.stdout.strip() == "vx23:ONLINE:point:direct", res.stderr
        # the reconciler restores the one entry too
        lab.exec(lab.host_ns(hosts[0]), "bridge", "fdb", "del", "00:00:00:00:00:00", "dev", "vx23", "self")
        wait_for(lambda: "00:00:00:00:00:00 dst 192.0.2.2" in lab.exec(
            lab.host_ns(hosts[0]), "bridge", "fdb", "show", "dev", "vx23").stdout, 5, "all-zeros entry restored")
    finally:
        lab.down()
