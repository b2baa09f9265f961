"""The 3-host overlay with the svp backend, on demand, against the reference `varpd svp-server`.

The server runs in the underlay namespace on 192.0.2.254 and serves the lab's
hosts.json; editing that file is the "mapping change on the server".  Each
varpd polls its shootdown log every 0.5 s here (`svp/log_interval`; the default
is 5-10 s as in illumos) so the tests stay short.  The cache TTL is 300 s, so an
entry that changes within seconds can only have been changed by the log (or,
after a server restart, by the backend's resync).
"""
from __future__ import annotations

import json
import signal

import pytest

from _overlay_helpers import fdb, neigh, ping, wait_for
from varpd.lab import Lab, seed_hosts, session_prefix, write_hosts_json, write_varpd_config
from varpd.lab.topology import run, varpd_bin

SERVER_IP = "192.0.2.254"
PORT = 1296


class SvpLab:
    def __init__(self, lab: Lab, workdir):
        self.lab, self.workdir, self.hosts = lab, workdir, lab.hosts
        self.hosts_json = workdir / "hosts.json"
        self.server = None

    def start_server(self) -> None:
        log = open(self.workdir / "svp-server.log", "a")
        self.server = self.lab.popen(self.lab.underlay, varpd_bin(), "svp-server", "--hosts", str(self.hosts_json),
                                     "--vni", "23", "--listen", f"{SERVER_IP}:{PORT}", "--log-level", "debug",
                                     stdout=log, stderr=log)
        wait_for(lambda: self.server.poll() is not None or "event=listening" in self.server_log(), 10,
                 "the svp server to listen")
        assert self.server.poll() is None, self.server_log()

    def kill_server(self) -> None:
        self.server.send_signal(signal.SIGKILL)
        self.server.wait(5)

    def server_log(self) -> str:
        return (self.workdir / "svp-server.log").read_text()

    def write(self, *, wait: bool = True, **port_of) -> None:
        """Rewrite hosts.json; `port_of[hostname] = port` moves that host's VNIC's port."""
        self.write_records({h.guest_mac: h.record(port=port_of.get(h.name, 4789)) for h in self.hosts}, wait=wait)

    def write_records(self, records: dict, *, wait: bool = True) -> None:
        """Rewrite hosts.json atomically and (`wait`) until the server has re-read it.  The server
        polls the file, so two rewrites within one poll would otherwise reach it as one change
        and a test could finish before its clean-up was seen."""
        reloads = self.server_log().count("event=reloaded")
        tmp = self.hosts_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1))
        tmp.replace(self.hosts_json)
        if wait:
            wait_for(lambda: self.server_log().count("event=reloaded") > reloads, 10,
                     "the svp server to re-read hosts.json")

    def records(self) -> dict:
        return json.loads(self.hosts_json.read_text())

    def overlay(self, host) -> dict:
        status, body = self.lab.api(host, "/v1/overlays/vx23")
        assert status == 200, body
        return body

    def g(self, h):
        return self.lab.guest_ns(h)


def _port(e: dict) -> int:
    return int(e.get("port", 4789))


@pytest.fixture(scope="module")
def sl(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("svp-overlay")
    hosts = seed_hosts(3)
    lab = Lab(hosts, prefix=session_prefix("vt-", "sv"))
    s = SvpLab(lab, workdir)
    try:
        lab.up()
        run("ip", "-n", lab.underlay, "addr", "add", f"{SERVER_IP}/24", "dev", "ubr0")
        write_hosts_json(s.hosts_json, hosts)
        s.start_server()
        for host in hosts:
            d = workdir / host.name
            (d / "state").mkdir(parents=True)
            cfg = write_varpd_config(d / "varpd.toml", host, state_dir=d / "state", sock=d / "varpd.sock",
                                     mode="on-demand", search="svp",
                                     properties={"svp/host": SERVER_IP, "svp/port": PORT,
                                                 "svp/underlay_ip": host.underlay_ip, "svp/log_interval": "0.5"})
            lab.start_varpd(host, cfg)
        for host in hosts:
            lab.wait_ready(host)
        for host in hosts:
            lab.attach_guest(host)
        yield s
    finally:
        if s.server is not None and s.server.poll() is None:
            s.server.kill()
            s.server.wait(5)
        lab.down()


def test_overlay_runs_on_demand_with_the_svp_plugin(sl):
    body = sl.overlay(sl.hosts[0])
    assert (body["plugin"], body["mode"], body["status"]) == ("svp", "on-demand", "ONLINE"), body


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6-link-local"])
def test_guests_reach_each_other_through_svp_lookups(sl, v6):
    for src in sl.hosts:
        for dst in sl.hosts:
            if dst is not src:
                ping(sl.lab, sl.g(src), dst.guest_ip6 if v6 else dst.guest_ip4, v6=v6)
    for h in sl.hosts:  # VL2_ACK gave the FDB entries, VL3_ACK the neighbour entries
        f, n = fdb(sl.lab, h), neigh(sl.lab, h)
        for r in sl.hosts:
            if r is not h:
                assert f.get(r.guest_mac, {}).get("dst") == r.underlay_ip, (h.name, f)
                assert n.get(r.guest_ip6 if v6 else r.guest_ip4, {}).get("lladdr") == r.guest_mac, (h.name, n)
    assert "event=shootdown" not in sl.server_log()


def test_vl2_shootdown_reaches_the_kernel(sl):
    """A MAC that moves on the server is withdrawn from every kernel that had it, then looked up anew."""
    h1, h2 = sl.hosts[0], sl.hosts[1]
    ping(sl.lab, sl.g(h1), h2.guest_ip4)
    assert _port(fdb(sl.lab, h1)[h2.guest_mac]) == 4789
    sl.write(host2=4790)
    wait_for(lambda: h2.guest_mac not in fdb(sl.lab, h1), 8, "h1 to withdraw h2's FDB entry (VL2 log record)")
    assert h2.guest_ip4 not in neigh(sl.lab, h1), "the neighbour entries of a withdrawn MAC go with it"
    sl.lab.exec(sl.g(h1), "ping", "-n", "-c1", "-W1", h2.guest_ip4, check=False)  # a miss: looked up anew
    wait_for(lambda: _port(fdb(sl.lab, h1).get(h2.guest_mac, {})) == 4790, 5, "h1 to learn port 4790 by VL2_REQ")
    sl.write()
    wait_for(lambda: _port(fdb(sl.lab, h1).get(h2.guest_mac, {"port": 0})) != 4790, 8, "the move back withdrawn")
    ping(sl.lab, sl.g(h1), h2.guest_ip4)
    assert "event=shootdown" in sl.server_log()
    status = sl.overlay(h1)
    assert status["status"] == "ONLINE" and status["counters"].get("mapping_changes", 0) >= 2, status


def test_vl3_shootdown_withdraws_a_reassigned_ip(sl):
    """An overlay IP that loses its owner on the server is looked up again and its neighbour entry goes."""
    h1, h3 = sl.hosts[0], sl.hosts[2]
    ping(sl.lab, sl.g(h1), h3.guest_ip4)
    assert neigh(sl.lab, h1)[h3.guest_ip4]["lladdr"] == h3.guest_mac
    records = sl.records()
    del records[h3.guest_mac]["arp"]
    sl.write_records(records)
    wait_for(lambda: h3.guest_ip4 not in neigh(sl.lab, h1), 8, "h1 to drop 10.55.55.4 (VL3 log record)")
    assert fdb(sl.lab, h1).get(h3.guest_mac, {}).get("dst") == h3.underlay_ip, "the MAC itself did not move"
    sl.write()
    ping(sl.lab, sl.g(h1), h3.guest_ip4)  # answered again after the negative cache entry expires


@pytest.mark.parametrize("released_first", [False, True], ids=["in-one-change", "released-then-reassigned"])
def test_vl3_shootdown_moves_an_ip_and_announces_it_to_guests(sl, released_first):
    """An overlay IP taken over by another MAC: reprogrammed at once and announced by gratuitous ARP,
    so a local guest's ARP cache follows without waiting for it to expire (illumos' VL3 shootdown).
    Released first and reassigned in a later change, it is the same move: the guests still hold
    the old owner, and the server must not depend on seeing both steps apart or together."""
    h1, h3 = sl.hosts[0], sl.hosts[2]
    new_mac = "02:00:00:00:33:03"
    ping(sl.lab, sl.g(h1), h3.guest_ip4)

    def guest_arp() -> str | None:
        out = sl.lab.exec(sl.g(h1), "ip", "-j", "neigh", "show", h3.guest_ip4).stdout
        return next((e.get("lladdr") for e in json.loads(out or "[]")), None)

    assert guest_arp() == h3.guest_mac
    announced = sl.overlay(h1)["counters"].get("announcements", 0)
    records = sl.records()
    del records[h3.guest_mac]["arp"]
    if released_first:
        sl.write_records(records)
        wait_for(lambda: h3.guest_ip4 not in neigh(sl.lab, h1), 8, "h1 to drop the released IP")
        assert guest_arp() == h3.guest_mac, "nothing told the guest yet: there is no new owner to announce"
    records[new_mac] = {"ip": h3.underlay_ip, "port": 4789, "arp": h3.guest_ip4}
    sl.write_records(records)
    wait_for(lambda: neigh(sl.lab, h1).get(h3.guest_ip4, {}).get("lladdr") == new_mac, 8,
             "h1's neighbour entry to follow the IP to its new MAC (VL3 log record)")
    assert fdb(sl.lab, h1).get(new_mac, {}).get("dst") == h3.underlay_ip, "the new owner's FDB entry is programmed"
    code, entries = sl.lab.api(h1, "/v1/overlays/vx23/entries")
    origins = {e["target"]: e["origin"] for e in entries}
    assert origins[new_mac] == origins[h3.guest_ip4] == "on-demand", origins  # varpd's own, not "other"
    wait_for(lambda: guest_arp() == new_mac, 5, "guest1's ARP cache updated by the gratuitous ARP")
    assert sl.overlay(h1)["counters"].get("announcements", 0) > announced
    sl.write()
    wait_for(lambda: neigh(sl.lab, h1).get(h3.guest_ip4, {}).get("lladdr") == h3.guest_mac, 8, "the IP moved back")
    wait_for(lambda: guest_arp() == h3.guest_mac, 5, "guest1's ARP cache back on the real owner")
    ping(sl.lab, sl.g(h1), h3.guest_ip4)


def test_server_restart_is_survived_and_loses_no_update(sl):
    """The server dies (its log with it); the mapping changes while it is down; varpd reconnects and resyncs."""
    h1, h2 = sl.hosts[0], sl.hosts[1]
    ping(sl.lab, sl.g(h1), h2.guest_ip4)
    sl.kill_server()
    wait_for(lambda: sl.overlay(h1)["status"] == "DEGRADED", 10, "h1 DEGRADED while the server is down")
    assert "svp server" in sl.overlay(h1)["details"], sl.overlay(h1)
    ping(sl.lab, sl.g(h1), h2.guest_ip4)  # what the kernel has keeps working while the server is away
    sl.write(host2=4790, wait=False)  # nobody to re-read it yet
    sl.start_server()
    wait_for(lambda: sl.overlay(h1)["status"] == "ONLINE", 40, "h1 ONLINE again (reconnect backoff)")
    wait_for(lambda: _port(fdb(sl.lab, h1).get(h2.guest_mac, {})) == 4790, 10,
             "the change made while the server was down to reach h1 (resync after reconnecting)")
    sl.write()
    wait_for(lambda: _port(fdb(sl.lab, h1).get(h2.guest_mac, {"port": 0})) != 4790, 8, "the move back withdrawn")
    ping(sl.lab, sl.g(h1), h2.guest_ip4)
    for h in sl.hosts:
        assert sl.overlay(h)["status"] == "ONLINE", sl.overlay(h)
