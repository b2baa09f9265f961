"""Three varpd hosts (-s evpn) through an FRR route reflector in the lab's underlay namespace
(192.0.2.254 on the underlay bridge): connectivity, a VNIC moved between hosts converging (MAC
mobility sequence numbers), and a crashed host's routes withdrawn (gobgpd dies with varpd): at
once, FRR 8.4 keeps no EVPN routes under graceful restart.
The last test leaves host3 down: the module's lab goes with it.
One lab for the module; the tests run in order.
"""
from __future__ import annotations

import json
import signal
import time

import pytest

from varpd.lab import HostSpec, Lab, seed_hosts, session_prefix, write_hosts_json, write_varpd_config
from varpd.lab.frr import FrrRouter, frr_missing
from varpd.lab.topology import run

from _overlay_helpers import fdb, ping, remote_fdb_ok, require, wait_all_pushed, wait_for

pytest.importorskip("grpc_tools")
from varpd_plugins import gobgp_api  # noqa: E402

RR_IP, ASN, STALE = "192.0.2.254", 65000, 9
MOVER = "02:16:00:00:00:99"


class RrLab:
    def __init__(self, lab: Lab, rr: FrrRouter, workdir):
        self.lab, self.rr, self.workdir = lab, rr, workdir
        self.hosts = lab.hosts
        self.configs = {}

    def local(self, host: HostSpec, *extra: HostSpec) -> None:
        write_hosts_json(self.workdir / f"{host.name}.json", [host, *extra])


@pytest.fixture(scope="module")
def rr(tmp_path_factory):
    require("bridge", "ip", "gobgpd")
    if (reason := frr_missing() or gobgp_api.missing_reason()):
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("evpnrr")
    hosts = seed_hosts(3, dhcp_proxy=False)
    lab = Lab(hosts, prefix=session_prefix("e16-", "r"))
    frr = FrrRouter(lab.underlay, router_id=RR_IP, asn=ASN,
                    neighbors=tuple(h.underlay_ip for h in hosts), route_reflector=True)
    try:
        lab.up()
        run("ip", "-n", lab.underlay, "addr", "add", f"{RR_IP}/24", "dev", "ubr0")
        frr.start()
        el = RrLab(lab, frr, workdir)
        for h in hosts:
            el.local(h)
            d = workdir / h.name
            (d / "state").mkdir(parents=True)
            props = {"evpn/asn": ASN, "evpn/neighbors": RR_IP, "evpn/local": str(workdir / f"{h.name}.json"),
                     "evpn/stale_time": STALE, "evpn/hold_time": 3}
            el.configs[h.name] = write_varpd_config(d / "varpd.toml", h, state_dir=d / "state", sock=d / "varpd.sock",
                                                    search="evpn", properties=props)
            lab.start_varpd(h, el.configs[h.name])
        for h in hosts:
            lab.wait_ready(h)
            lab.attach_guest(h)
        wait_all_pushed(lab, hosts, 20, "the other hosts' VNICs learned through the route reflector")
        yield el
    finally:
        frr.stop()
        lab.down()


def test_guests_ping_through_routes_reflected_by_frr(rr):
    lab, (h1, h2, h3) = rr.lab, rr.hosts
    ping(lab, lab.guest_ns(h1), h2.guest_ip4)
    ping(lab, lab.guest_ns(h2), h3.guest_ip6, v6=True)
    ping(lab, lab.guest_ns(h3), h1.guest_ip4)
    status, ov = lab.api(h1, "/v1/overlays/vx23")
    assert ov["backend"]["flood_list"] == [h2.underlay_ip, h3.underlay_ip], ov["backend"]


def test_a_vnic_moved_to_another_host_converges(rr):
    lab, (h1, h2, h3) = rr.lab, rr.hosts
    at2 = HostSpec("host2", h2.underlay_ip, MOVER, "10.55.55.99", "fe80::99")
    at1 = HostSpec("host1", h1.underlay_ip, MOVER, "10.55.55.99", "fe80::99")
    gns = lab.add_guest(h2, mac=MOVER, ip4=at2.guest_ip4, ip6=at2.guest_ip6, vnic="vnic1", tag="mover")
    lab.attach_guest(h2, vnic="vnic1")
    rr.local(h2, at2)
    for h in (h1, h3):
        wait_for(lambda: remote_fdb_ok(lab, h, [at2]), 10, f"{h.name} to learn the VNIC on host2")
    ping(lab, lab.guest_ns(h3), at2.guest_ip4)
    # the move: the VNIC's guest goes from host2 to host1, host1 advertises it (sequence number 1)
    lab.remove_guest(gns)
    gns = lab.add_guest(h1, mac=MOVER, ip4=at1.guest_ip4, ip6=at1.guest_ip6, vnic="vnic1", tag="mover")
    lab.attach_guest(h1, vnic="vnic1")
    t0 = time.monotonic()
    rr.local(h1, at1)
    rr.local(h2)  # host2 withdraws it after host1 advertised it: the late withdrawal must change nothing
    for h in (h2, h3):
        wait_for(lambda: remote_fdb_ok(lab, h, [at1]), 10, f"{h.name} to follow the move to host1")
    converged = time.monotonic() - t0
    print(f"VNIC move converged on host2 and host3 in {converged * 1000:.0f} ms")
    time.sleep(0.5)  # a late withdrawal would show now
    assert remote_fdb_ok(lab, h3, [at1]) and remote_fdb_ok(lab, h2, [at1])
    status, answer = lab.api(h3, f"/v1/overlays/vx23/lookup?mac={MOVER}")
    assert answer["route"]["best"]["seq"] == 1 and answer["route"]["best"]["next_hop"] == h1.underlay_ip, answer
    ping(lab, lab.guest_ns(h3), at1.guest_ip4)
    assert converged < 5
    rr.local(h1)
    for h in (h2, h3):
        wait_for(lambda: MOVER not in fdb(lab, h), 10, f"{h.name}: the VNIC withdrawn")
    lab.remove_guest(gns)


def test_a_crashed_host_is_withdrawn_at_once_frr_has_no_evpn_graceful_restart(rr):
    """varpd SIGKILLed: gobgpd dies with it (PDEATHSIG), its session drops without a NOTIFICATION.
    The host advertised graceful restart for l2vpn evpn, restart time evpn/stale_time, and FRR
    got it, yet withdraws the host's routes at once: FRR 8.4's GR helper covers unicast,
    multicast and VPN only (bgpd's FOREACH_AFI_SAFI_NSF stops at SAFI_MPLS_VPN), not EVPN; the
    forwarding-state bit and `bgp graceful-restart preserve-fw-state` change nothing (tried).
    This test fails, and should be changed to the stale-time behaviour, with an FRR that does."""
    lab, (h1, h2, h3) = rr.lab, rr.hosts
    seen = json.loads(rr.rr.vtysh(f"show bgp neighbors {h3.underlay_ip} json"))[h3.underlay_ip]
    caps = seen["neighborCapabilities"]
    assert caps["gracefulRestart"] == "advertisedAndReceived" and "l2VpnEvpn" in caps["addressFamiliesByPeer"], caps
    assert seen["gracefulRestartInfo"]["timers"]["receivedRestartTimer"] == STALE, seen["gracefulRestartInfo"]
    assert lab.stop_varpd(h3, signal.SIGKILL) == -signal.SIGKILL
    t0 = time.monotonic()
    wait_for(lambda: h3.guest_mac not in fdb(lab, h1) and h3.guest_mac not in fdb(lab, h2), STALE / 2,
             "host3's VNIC withdrawn after its gobgpd died")
    print(f"crashed host withdrawn on host1 and host2 in {(time.monotonic() - t0) * 1000:.0f} ms "
          f"(advertised restart time {STALE} s)")
    assert remote_fdb_ok(lab, h1, [h2])
    status, ov = lab.api(h1, "/v1/overlays/vx23")
    assert ov["status"] == "ONLINE" and ov["backend"]["flood_list"] == [h2.underlay_ip], ov
    ping(lab, lab.guest_ns(h1), h2.guest_ip4)  # the others unaffected (a restart is test_evpn_frr's)
