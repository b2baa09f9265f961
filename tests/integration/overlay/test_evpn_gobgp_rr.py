"""Two varpd hosts (-s evpn) through a gobgpd route reflector (Debian gobgpd, GR helper) in the
lab's underlay namespace: standard BGP graceful restart for a crashed host.  varpd's gobgpd
advertises GR for l2vpn evpn with restart time evpn/stale_time; SIGKILLed, its session drops
without a NOTIFICATION, and a helper covering EVPN keeps the host's routes for that time, then
withdraws them (FRR 8.4 does not: test_evpn_rr, where varpd's own VTEP-loss hold covers it).
The restart of a host is test_evpn_frr's.
"""
from __future__ import annotations

import signal
import subprocess
import time

import pytest

from varpd.lab import Lab, seed_hosts, session_prefix, write_hosts_json, write_varpd_config
from varpd.lab.topology import run

from _overlay_helpers import fdb, ping, require, wait_all_pushed

pytest.importorskip("grpc_tools")
from varpd_plugins import gobgp_api  # noqa: E402

RR_IP, ASN, STALE = "192.0.2.254", 65000, 4


def rr_config(neighbors: list[str]) -> str:
    out = [f'[global.config]\n  as = {ASN}\n  router-id = "{RR_IP}"\n  local-address-list = ["{RR_IP}"]\n']
    for n in neighbors:
        out.append(f"""[[neighbors]]
  [neighbors.config]
    neighbor-address = "{n}"
    peer-as = {ASN}
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 9
    keepalive-interval = 3
  [neighbors.route-reflector.config]
    route-reflector-client = true
    route-reflector-cluster-id = "{RR_IP}"
  [neighbors.graceful-restart.config]
    enabled = true
    helper-only = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l2vpn-evpn"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
""")
    return "\n".join(out)


@pytest.fixture(scope="module")
def glab(tmp_path_factory):
    require("bridge", "ip", "gobgpd")
    if (reason := gobgp_api.missing_reason()):
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("evpngrr")
    hosts = seed_hosts(2, dhcp_proxy=False)
    lab = Lab(hosts, prefix=session_prefix("g16-", "r"))
    rr = None
    try:
        lab.up()
        run("ip", "-n", lab.underlay, "addr", "add", f"{RR_IP}/24", "dev", "ubr0")
        (workdir / "rr.toml").write_text(rr_config([h.underlay_ip for h in hosts]))
        with open(workdir / "rr.log", "ab") as log:
            rr = subprocess.Popen(["ip", "netns", "exec", lab.underlay, "gobgpd", "-f", str(workdir / "rr.toml"),
                                   "--api-hosts=127.0.0.1:50151", "--pprof-disable", "--log-plain"],
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        for h in hosts:
            write_hosts_json(workdir / f"{h.name}.json", [h])
            d = workdir / h.name
            (d / "state").mkdir(parents=True)
            # vtep_hold 0: what is measured is the route reflector's graceful restart alone; with the
            # default (= stale_time) host1 holds the routes again once the RR withdraws them (8.2 s)
            props = {"evpn/asn": ASN, "evpn/neighbors": RR_IP, "evpn/local": str(workdir / f"{h.name}.json"),
                     "evpn/stale_time": STALE, "evpn/vtep_hold": 0, "evpn/hold_time": 3}
            lab.start_varpd(h, write_varpd_config(d / "varpd.toml", h, state_dir=d / "state", sock=d / "varpd.sock",
                                                  search="evpn", properties=props))
        for h in hosts:
            lab.wait_ready(h)
            lab.attach_guest(h)
        wait_all_pushed(lab, hosts, 20, "the other host's VNIC learned through the gobgpd route reflector")
        yield lab, hosts
    finally:
        if rr is not None:
            rr.terminate()
            try:
                rr.wait(5)
            except subprocess.TimeoutExpired:
                rr.kill()
                rr.wait(2)
        lab.down()


def test_a_crashed_host_is_kept_for_the_stale_time_then_withdrawn(glab):
    """The route reflector keeps host2's routes for the restart time host2 advertised, then
    withdraws them: host1 keeps forwarding to host2's VNIC meanwhile."""
    lab, (h1, h2) = glab
    ping(lab, lab.guest_ns(h1), h2.guest_ip4)
    assert lab.stop_varpd(h2, signal.SIGKILL) == -signal.SIGKILL
    t0 = time.monotonic()
    ping(lab, lab.guest_ns(h1), h2.guest_ip4)  # host2's kernel state outlives its varpd: forwarding goes on
    assert h2.guest_mac in fdb(lab, h1)
    kept = None
    while time.monotonic() - t0 < STALE + 5:
        if h2.guest_mac not in fdb(lab, h1):
            break
        kept = time.monotonic() - t0
        time.sleep(0.1)
    gone = time.monotonic() - t0
    print(f"crashed host2's VNIC kept on host1 {kept:.2f} s, gone after {gone:.2f} s (stale time {STALE} s)")
    assert STALE - 0.5 <= gone <= STALE + 3, (kept, gone)
    status, ov = lab.api(h1, "/v1/overlays/vx23")
    assert ov["status"] == "ONLINE" and ov["backend"]["flood_list"] == [], ov

