"""The 3-host overlay with the http backend, on demand, against `varpd mapping-server`.

The daemons live in host namespaces and cannot reach the root namespace's loopback,
so the mapping server runs in the underlay namespace on 192.0.2.254 (an address on
the underlay bridge). Changes PUT or DELETEd on the server reach every kernel
through the events stream, well before any cache TTL (300 s).
"""
from __future__ import annotations

import json
import sys
import time

import pytest

from _overlay_helpers import fdb, neigh, ping, wait_for
from varpd.lab import Lab, seed_hosts, session_prefix, write_hosts_json, write_varpd_config
from varpd.lab.topology import run, varpd_bin

SERVER_IP = "192.0.2.254"
URL = f"http://{SERVER_IP}:8080"
TOKEN = "lab-token"

_CLIENT = r"""
import json, sys, urllib.request, urllib.error
method, url, token = sys.argv[1], sys.argv[2], sys.argv[3]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request(url, data=body, method=method, headers={"Authorization": "Bearer " + token,
                                                                      "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=3) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"""


class HttpLab:
    def __init__(self, lab: Lab, workdir):
        self.lab, self.workdir, self.hosts = lab, workdir, lab.hosts

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
        args = [method, f"{URL}{path}", TOKEN] + ([json.dumps(body)] if body is not None else [])
        out = self.lab.exec(self.lab.underlay, sys.executable, "-c", _CLIENT, *args, check=False, timeout=10).stdout
        status, _, text = out.strip().partition(" ")
        return (int(status) if status.isdigit() else 0), text

    def g(self, h):
        return self.lab.guest_ns(h)

    def remotes(self, h):
        return [r for r in self.hosts if r != h]


@pytest.fixture(scope="module")
def hl(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("http-overlay")
    hosts = seed_hosts(3)
    lab = Lab(hosts, prefix=session_prefix("vt-", "ht"))
    try:
        lab.up()
        run("ip", "-n", lab.underlay, "addr", "add", f"{SERVER_IP}/24", "dev", "ubr0")
        hosts_json = workdir / "hosts.json"
        write_hosts_json(hosts_json, hosts)
        server_log = open(workdir / "mapping-server.log", "w")
        server = lab.popen(lab.underlay, varpd_bin(), "mapping-server", "--hosts", str(hosts_json), "--vni", "23",
                           "--listen", f"{SERVER_IP}:8080", "--token", TOKEN, "--keepalive", "2",
                           stdout=server_log, stderr=server_log)
        h = HttpLab(lab, workdir)
        h.server, h.server_log = server, workdir / "mapping-server.log"
        wait_for(lambda: server.poll() is not None or h.call("GET", "/v1/health")[0] == 200, 10, "the mapping server")
        assert server.poll() is None, h.server_log.read_text()
        for host in hosts:
            d = workdir / host.name
            (d / "state").mkdir(parents=True)
            cfg = write_varpd_config(d / "varpd.toml", host, state_dir=d / "state", sock=d / "varpd.sock",
                                     mode="on-demand", search="http",
                                     properties={"http/url": URL, "http/token": TOKEN, "http/timeout": "1"})
            lab.start_varpd(host, cfg)
        for host in hosts:
            lab.wait_ready(host)
        for host in hosts:
            lab.attach_guest(host)
        time.sleep(1.2)  # one reconcile pass before the "nothing yet" snapshot
        h.initial_fdb = {host.name: fdb(lab, host) for host in hosts}
        yield h
    finally:
        lab.down()


def test_overlay_runs_on_demand_with_the_http_plugin(hl):
    status, body = hl.lab.api(hl.hosts[0], "/v1/overlays/vx23")
    assert status == 200, body
    assert (body["plugin"], body["mode"], body["status"]) == ("http", "on-demand", "ONLINE"), body
    for h in hl.hosts:  # nothing is programmed before traffic
        assert not any(r.guest_mac in hl.initial_fdb[h.name] for r in hl.remotes(h)), hl.initial_fdb


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6-link-local"])
def test_guests_reach_each_other(hl, v6):
    for src in hl.hosts:
        for dst in hl.remotes(src):
            ping(hl.lab, hl.g(src), dst.guest_ip6 if v6 else dst.guest_ip4, v6=v6)
    for h in hl.hosts:  # installed by the misses, answered by the mapping server
        f, n = fdb(hl.lab, h), neigh(hl.lab, h)
        for r in hl.remotes(h):
            assert f.get(r.guest_mac, {}).get("dst") == r.underlay_ip, (h.name, f)
            assert n.get(r.guest_ip6 if v6 else r.guest_ip4, {}).get("lladdr") == r.guest_mac, (h.name, n)


def _port(e: dict) -> int:
    return int(e.get("port", 4789))


def test_put_reaches_the_kernel_through_the_events_stream(hl):
    h1, h2 = hl.hosts[0], hl.hosts[1]
    ping(hl.lab, hl.g(h1), h2.guest_ip4)
    assert _port(fdb(hl.lab, h1)[h2.guest_mac]) == 4789
    status, text = hl.call("PUT", f"/v1/overlays/23/macs/{h2.guest_mac}", h2.record(port=4790))
    assert status == 200, text
    t0 = time.monotonic()
    wait_for(lambda: _port(fdb(hl.lab, h1).get(h2.guest_mac, {})) == 4790, 5, "h1's FDB entry to move to port 4790")
    assert time.monotonic() - t0 < 5  # the cache TTL is 300 s: only the event can have done this
    status, text = hl.call("PUT", f"/v1/overlays/23/macs/{h2.guest_mac}", h2.record())
    assert status == 200, text
    wait_for(lambda: _port(fdb(hl.lab, h1).get(h2.guest_mac, {})) == 4789, 5, "h1's FDB entry to move back")
    ping(hl.lab, hl.g(h1), h2.guest_ip4)


def test_delete_withdraws_entries_and_put_brings_them_back(hl):
    h1, h3 = hl.hosts[0], hl.hosts[2]
    ping(hl.lab, hl.g(h1), h3.guest_ip4)
    status, text = hl.call("DELETE", f"/v1/overlays/23/macs/{h3.guest_mac}")
    assert status == 204, text
    for h in hl.hosts[:2]:
        wait_for(lambda: h3.guest_mac not in fdb(hl.lab, h) and h3.guest_ip4 not in neigh(hl.lab, h)
                 and h3.guest_ip6 not in neigh(hl.lab, h), 5, f"{h.name}: h3's entries withdrawn")
    res = hl.lab.exec(hl.g(h1), "ping", "-n", "-c1", "-W1", h3.guest_ip4, check=False)
    assert res.returncode != 0, "h3 is unknown now: nothing should reach it"
    status, text = hl.call("PUT", f"/v1/overlays/23/macs/{h3.guest_mac}", h3.record())
    assert status == 201, text
    ping(hl.lab, hl.g(h1), h3.guest_ip4)  # the upsert also dropped the negative cache entry
    status, body = hl.lab.api(h1, "/v1/overlays/vx23")
    assert body["status"] == "ONLINE" and body["counters"].get("mapping_changes", 0) >= 3, body
