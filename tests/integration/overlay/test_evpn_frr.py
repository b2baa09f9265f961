"""The evpn backend against real FRR: host1 runs varpd (-s evpn, gobgpd started by varpd, flooding
by head-end replication to the VTEPs of IMET routes), host2 is an FRR-managed VTEP (zebra + bgpd,
`advertise-all-vni` on a Linux VXLAN device, no ARP suppression: its guests' ARP is flooded to
host1 and answered by host1's guest), over the lab's 2-host underlay.  One lab for the module; the
tests run in order and each leaves it as it found it.
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import time
from pathlib import Path

import pytest

from varpd.lab import HostSpec, Lab, session_prefix, write_hosts_json, write_varpd_config
from varpd.lab.topology import http_request, run
from varpd.lab.frr import FrrRouter, announce_guests, frr_missing, make_vtep

from _overlay_helpers import fdb, neigh, ping, require, tcp_transfer, wait_for

pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")
from varpd_plugins import gobgp_api  # noqa: E402

VNI, ASN, STALE = 23, 65000, 9  # gobgpd waits 5 s before it takes a dropped peer back
H1 = HostSpec("host1", "192.0.2.1", "de:ad:be:ef:00:00", "10.55.55.2", "2001:db8:55::2")
H2 = HostSpec("host2", "192.0.2.2", "de:ad:be:ef:00:01", "10.55.55.3", "2001:db8:55::3")
EXTRA = HostSpec("host1", "192.0.2.1", "02:16:00:00:00:42", "10.55.55.42", "2001:db8:55::42")


class EvpnLab:
    def __init__(self, lab: Lab, frr: FrrRouter, workdir):
        self.lab, self.frr, self.workdir = lab, frr, workdir

    def overlay(self) -> dict:
        status, body = self.lab.api(H1, "/v1/overlays/vx23")
        assert status == 200, body
        return body

    def write_local(self, *extra: HostSpec) -> None:
        write_hosts_json(self.workdir / "local.json", [H1, *extra])

    def frr_routes(self, mac: str | None = None, rtype: int | None = None) -> list[dict]:
        return [r for r in self.frr.evpn_routes()
                if (mac is None or r.get("mac") == mac) and (rtype is None or r.get("routeType") == rtype)]


@pytest.fixture(scope="module")
def evpn(tmp_path_factory):
    require("bridge", "ip", "gobgpd")
    if (reason := frr_missing() or gobgp_api.missing_reason()):
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("evpnlab")
    lab = Lab([H1, H2], prefix=session_prefix("e16-", "f"))
    frr = FrrRouter(lab.host_ns(H2), router_id=H2.underlay_ip, asn=ASN, neighbors=(H1.underlay_ip,))
    try:
        lab.up()
        make_vtep(lab.host_ns(H2), vni=VNI, local_ip=H2.underlay_ip, bridge="br0", vxlan="vx23",
                  svi=["10.55.55.254/24", "2001:db8:55::fe/64"], neigh_suppress=False)
        lab.attach_guest(H2)  # no varpd on host2: the guest's port made by hand, on FRR's bridge
        frr.start()
        announce_guests(lab.host_ns(H2), "br0", [(H2.guest_ip4, H2.guest_mac), (H2.guest_ip6, H2.guest_mac)])
        el = EvpnLab(lab, frr, workdir)
        el.write_local()
        d = workdir / "host1"
        (d / "state").mkdir(parents=True)
        props = {"evpn/asn": ASN, "evpn/neighbors": H2.underlay_ip, "evpn/local": str(workdir / "local.json"),
                 "evpn/stale_time": STALE, "evpn/hold_time": 3, "evpn/api_port": 50516, "vxlan/flood": "replicate"}
        cfg = write_varpd_config(d / "varpd.toml", H1, state_dir=d / "state", sock=d / "varpd.sock", search="evpn",
                                 vni=VNI, properties=props)
        el.config = cfg
        lab.start_varpd(H1, cfg)
        lab.wait_ready(H1)
        lab.attach_guest(H1)
        wait_for(lambda: H2.guest_mac in fdb(lab, H1), 20, "host1 to learn host2's guest from FRR")
        yield el
    finally:
        frr.stop()
        lab.down()


def test_routes_learned_from_frr_become_fdb_and_neighbour_entries(evpn):
    lab = evpn.lab
    assert fdb(lab, H1)[H2.guest_mac]["dst"] == H2.underlay_ip
    wait_for(lambda: {H2.guest_ip4, H2.guest_ip6} <= set(neigh(lab, H1, "br0")), 5,
             "neighbour entries (on the bridge: the overlay floods) from MAC/IP routes")
    assert neigh(lab, H1, "br0")[H2.guest_ip4]["lladdr"] == H2.guest_mac
    ov = evpn.overlay()
    assert ov["status"] == "ONLINE" and ov["mode"] == "push" and ov["plugin"] == "evpn", ov
    assert ov["backend"]["sessions"] == {H2.underlay_ip: "ESTABLISHED"}
    assert ov["backend"]["flood_list"] == [H2.underlay_ip]  # FRR's IMET route
    zeros = [e for e in fdb(lab, H1).values() if e["mac"] == "00:00:00:00:00:00"]
    assert [e["dst"] for e in zeros] == [H2.underlay_ip], zeros  # broadcasts replicated to FRR's VTEP
    # show-overlay -t says where the entry came from, lookup-overlay which route
    status, rows = lab.api(H1, "/v1/overlays/vx23/entries")
    assert any(r["target"] == H2.guest_mac and r["origin"] == "evpn" for r in rows), rows
    status, answer = lab.api(H1, f"/v1/overlays/vx23/lookup?mac={H2.guest_mac}")
    best = answer["route"]["best"]
    assert best["rd"].startswith(H2.underlay_ip + ":") and best["next_hop"] == H2.underlay_ip and best["seq"] == 0
    assert "65000:23" in best["rt"]


def test_frr_shows_varpd_type2_and_type3_routes_with_rd_rt_next_hop(evpn):
    def mine():
        return [r for r in evpn.frr.evpn_routes() if r["rd"] == f"{H1.underlay_ip}:{VNI}"]

    routes = wait_for(lambda: len(mine()) >= 4 and mine(), 10, "varpd's routes in FRR's table")
    kinds = {(r["routeType"], r.get("ip")) for r in routes}
    assert {(2, None), (2, H1.guest_ip4), (2, H1.guest_ip6), (3, H1.underlay_ip)} <= kinds, kinds
    for r in routes:
        assert "RT:65000:23" in r["extendedCommunity"]["string"] and "ET:8" in r["extendedCommunity"]["string"]
        assert r["nexthops"][0]["ip"] == H1.underlay_ip
    # zebra programmed them: FRR's kernel forwards host1's guest MAC to host1's VTEP
    out = evpn.lab.exec(evpn.lab.host_ns(H2), "bridge", "-j", "fdb", "show", "dev", "vx23").stdout
    entries = json.loads(out)
    assert any(e["mac"] == H1.guest_mac and e.get("dst") == H1.underlay_ip for e in entries), entries
    assert any(e["mac"] == "00:00:00:00:00:00" and e.get("dst") == H1.underlay_ip for e in entries), entries


def test_frr_advertises_a_static_sticky_mac_as_sticky_and_varpd_learns_it_so(evpn):
    """RFC 7432 §15.2 from FRR's side: zebra advertises a local MAC whose bridge FDB entry is
    `static sticky` (NTF_STICKY: the lab pins host2's guest so) with the MAC mobility community's
    static flag, a plain static one without; varpd decodes the flag (a sticky route keeps its VTEP
    against a non-sticky one of another VTEP whatever its sequence number: test_evpn_routes and
    test_evpn_backend, this lab having no third VTEP).  The plain one deleted is withdrawn while
    host2's IMET stays: host1 removes it (no VTEP-loss hold)."""
    lab, plain = evpn.lab, "02:16:00:00:00:58"

    def best(mac):
        return (lab.api(H1, f"/v1/overlays/vx23/lookup?mac={mac}")[1].get("route") or {}).get("best") or {}

    assert best(H2.guest_mac)["sticky"] is True
    assert any("MM:0, sticky MAC" in r["extendedCommunity"]["string"] for r in evpn.frr_routes(H2.guest_mac)), \
        evpn.frr_routes(H2.guest_mac)
    run("bridge", "-n", lab.host_ns(H2), "fdb", "replace", plain, "dev", "vnic0", "master", "static")
    try:
        wait_for(lambda: plain in fdb(lab, H1), 10, "host1 to learn the plain static MAC")
        assert best(plain)["sticky"] is False and best(plain)["seq"] == 0
    finally:
        run("bridge", "-n", lab.host_ns(H2), "fdb", "del", plain, "dev", "vnic0", "master", check=False)
    t0 = time.monotonic()
    wait_for(lambda: plain not in fdb(lab, H1), 5, "host1 to remove the deleted MAC", interval=0.05)
    print(f"a MAC deleted on FRR's host removed on host1 in {(time.monotonic() - t0) * 1000:.0f} ms")
    assert evpn.overlay()["status"] == "ONLINE" and H2.guest_mac in fdb(lab, H1)


def test_guests_ping_and_transfer_over_tcp_both_ways(evpn):
    lab = evpn.lab
    g1, g2 = lab.guest_ns(H1), lab.guest_ns(H2)
    ping(lab, g1, H2.guest_ip4)
    ping(lab, g1, H2.guest_ip6, v6=True)
    ping(lab, g2, H1.guest_ip4)
    ping(lab, g2, H1.guest_ip6, v6=True)
    for src, dst, ip in ((g1, g2, H2.guest_ip4), (g2, g1, H1.guest_ip4)):
        sent, got = tcp_transfer(lab, src, dst, ip, 2_000_000)
        assert sent == got and sent.startswith("2000000 "), (sent, got)


def test_a_local_record_added_and_removed_is_advertised_and_withdrawn(evpn):
    evpn.write_local(EXTRA)
    wait_for(lambda: len(evpn.frr_routes(EXTRA.guest_mac, 2)) == 3, 10, "FRR to receive the new record's routes")
    evpn.write_local()
    wait_for(lambda: not evpn.frr_routes(EXTRA.guest_mac), 10, "FRR to see the record's routes withdrawn")


def test_session_drop_keeps_entries_stale_then_applies_only_the_difference(evpn):
    lab, frr = evpn.lab, evpn.frr
    before = evpn.overlay()["counters"].get("mapping_changes", 0)
    frr.kill("bgpd")
    ov = wait_for(lambda: (o := evpn.overlay())["status"] == "DEGRADED" and o, 10, "host1 DEGRADED")
    assert "BGP session not established" in ov["details"] and "kept stale" in ov["details"], ov["details"]
    assert fdb(lab, H1)[H2.guest_mac]["dst"] == H2.underlay_ip  # still programmed
    assert ov["backend"]["stale_routes"] >= 4
    frr.start_daemon("bgpd")
    wait_for(lambda: evpn.overlay()["status"] == "ONLINE", 15, "host1 ONLINE after the session came back")
    ov = evpn.overlay()
    assert ov["backend"]["stale_routes"] == 0
    assert ov["counters"].get("mapping_changes", 0) == before, "the same routes again changed the mapping"
    assert fdb(lab, H1)[H2.guest_mac]["dst"] == H2.underlay_ip
    ping(lab, lab.guest_ns(H1), H2.guest_ip4)


def test_routes_of_a_session_that_stays_down_go_after_the_stale_time(evpn):
    lab, frr = evpn.lab, evpn.frr
    frr.kill("bgpd")
    wait_for(lambda: evpn.overlay()["status"] == "DEGRADED", 10, "host1 DEGRADED")
    t0 = time.monotonic()
    assert H2.guest_mac in fdb(lab, H1)
    wait_for(lambda: H2.guest_mac not in fdb(lab, H1), STALE + 5, "the stale entry to be withdrawn")
    assert time.monotonic() - t0 >= STALE - 1.5
    assert H2.guest_ip4 not in neigh(lab, H1, "br0")
    assert evpn.overlay()["backend"]["flood_list"] == []
    frr.start_daemon("bgpd")
    wait_for(lambda: H2.guest_mac in fdb(lab, H1), 15, "host2's guest learned again")
    ping(lab, lab.guest_ns(H1), H2.guest_ip6, v6=True)


def _is_gobgpd(pid: str) -> bool:
    """Whether process `pid` is host1's gobgpd (named by its API port)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmd) and cmd[0].endswith(b"gobgpd") and b"--api-hosts=127.0.0.1:50516" in cmd


def _gobgpd_pid() -> int:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if _is_gobgpd(pid):
            return int(pid)
    raise AssertionError("host1's gobgpd is not running")


def test_gobgpd_killed_is_restarted_and_the_routes_come_back(evpn):
    lab = evpn.lab
    before = evpn.overlay()["counters"].get("mapping_changes", 0)
    old = _gobgpd_pid()
    os.kill(old, signal.SIGKILL)
    ov = wait_for(lambda: (o := evpn.overlay())["status"] == "DEGRADED" and o, 10, "host1 DEGRADED")
    assert ov["details"].startswith("gobgpd: gobgpd exited with status -9"), ov["details"]
    assert fdb(lab, H1)[H2.guest_mac]["dst"] == H2.underlay_ip  # kept, stale
    ov = wait_for(lambda: (o := evpn.overlay())["status"] == "ONLINE" and o, 20, "host1 ONLINE with a new gobgpd")
    assert _gobgpd_pid() != old and ov["backend"]["engine_restarts"] == 1 and ov["backend"]["stale_routes"] == 0
    assert ov["counters"].get("mapping_changes", 0) == before, "the same routes again changed the mapping"
    wait_for(lambda: len([r for r in evpn.frr.evpn_routes() if r["rd"] == f"{H1.underlay_ip}:{VNI}"]) >= 4, 10,
             "host1's routes advertised again by the new gobgpd")
    ping(lab, lab.guest_ns(H2), H1.guest_ip4)


def test_a_second_evpn_overlay_shares_gobgpd_and_its_routes_go_with_it(evpn):
    """Two evpn overlays of one daemon: one gobgpd (one BGP speaker on port 179), each overlay
    advertising its own VNI's type-3 route; deleting one withdraws its routes only."""
    lab, sock = evpn.lab, evpn.lab.socket_path(H1)
    props = {"vxlan/listen_ip": H1.underlay_ip, "evpn/asn": ASN, "evpn/neighbors": H2.underlay_ip,
             "evpn/stale_time": STALE, "evpn/hold_time": 3, "evpn/api_port": 50516}
    body = {"name": "vx24", "vni": 24, "search": "evpn", "mode": "push", "bridge": "br1", "persist": False,
            "properties": props}
    status, answer = http_request(sock, "POST", "/v1/overlays", body, timeout=30)
    assert status == 201, answer
    try:
        def rds():
            return {r["rd"] for r in evpn.frr.evpn_routes() if r["routeType"] == 3}
        wait_for(lambda: {f"{H1.underlay_ip}:23", f"{H1.underlay_ip}:24"} <= rds(), 10, "both VNIs' IMET routes in FRR")
        assert len([p for p in os.listdir("/proc") if p.isdigit() and _is_gobgpd(p)]) == 1
        status, ov = lab.api(H1, "/v1/overlays/vx24")
        assert ov["status"] == "ONLINE" and ov["backend"]["rt"] == "65000:24" and ov["backend"]["flood_list"] == []
        assert evpn.overlay()["backend"]["flood_list"] == [H2.underlay_ip]  # FRR's VNI 23 only
    finally:
        status, _ = http_request(sock, "DELETE", "/v1/overlays/vx24", timeout=30)
    assert status in (200, 204)
    wait_for(lambda: f"{H1.underlay_ip}:24" not in rds(), 10, "vx24's routes withdrawn")
    assert f"{H1.underlay_ip}:23" in rds() and evpn.overlay()["status"] == "ONLINE"
    ping(lab, lab.guest_ns(H1), H2.guest_ip4)


def test_a_restarted_varpd_keeps_the_entries_while_bgp_converges_again(evpn):
    """start() waits for the sessions' End-of-RIB (evpn/sync_wait) before the overlay is programmed:
    an empty table at start would delete every entry the restarted daemon finds in the kernel."""
    lab = evpn.lab
    monitor = lab.popen(lab.host_ns(H1), "bridge", "monitor", "fdb")
    try:
        time.sleep(0.2)
        assert lab.stop_varpd(H1) == 0
        lab.start_varpd(H1, evpn.config)
        lab.wait_ready(H1)
        wait_for(lambda: evpn.overlay()["status"] == "ONLINE", 10, "host1 ONLINE after the restart")
    finally:
        monitor.terminate()
        out = monitor.communicate(timeout=5)[0]
    assert not [ln for ln in out.splitlines() if ln.startswith("Deleted") and H2.guest_mac in ln], out
    assert "event=synced" in lab.log_path(H1).read_text()
    ping(lab, lab.guest_ns(H1), H2.guest_ip4)


def test_metrics_count_routes_and_session_state(evpn):
    status, _ = evpn.lab.api(H1, "/v1/health")
    import http.client
    import socket

    class Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(evpn.lab.socket_path(H1)))

    c = Conn("localhost")
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("varpd_evpn")]
    assert any(ln.startswith('varpd_evpn_routes_total{') and 'event="received"' in ln and not ln.endswith(" 0.0")
               for ln in lines), lines
    assert any(ln.startswith("varpd_evpn_session_established{") and H2.underlay_ip in ln and ln.endswith(" 1.0")
               for ln in lines), lines
    assert ipaddress.ip_address(H2.underlay_ip)
