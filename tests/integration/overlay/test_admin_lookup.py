"""Admin API lookup explanation and cache stats against a live on-demand varpd in a namespace,
the lookup-overlay / show-overlay -c commands, and the daemon's JSON log lines (--log-format json).

One 2-host lab for the module; only host1 runs varpd (files backend, on-demand), so nothing is
programmed until a lookup, a miss or an override asks for it.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import urlencode

import pytest

from varpd.lab import Lab, seed_hosts, session_prefix, write_hosts_json, write_varpd_config
from varpd.lab.topology import http_get, varpd_bin

from _overlay_helpers import VX, wait_for

UNKNOWN_MAC = "02:00:00:00:00:42"


class Daemon:
    def __init__(self, lab: Lab, workdir: Path):
        self.lab, self.workdir = lab, workdir
        self.h1, self.h2 = lab.hosts
        self.sock = workdir / "varpd.sock"
        self.log = workdir / "varpd.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        hosts_json = self.workdir / "hosts.json"
        write_hosts_json(hosts_json, self.lab.hosts)
        (self.workdir / "state").mkdir(exist_ok=True)
        cfg = write_varpd_config(self.workdir / "varpd.toml", self.h1, hosts_json=hosts_json,
                                 state_dir=self.workdir / "state", sock=self.sock, mode="on-demand")
        with open(self.log, "wb") as logf:
            self.proc = self.lab.popen(self.lab.host_ns(self.h1), varpd_bin(), "daemon", "--config", str(cfg),
                                       "--log-format", "json", stdout=logf, stderr=subprocess.STDOUT)

        def ready():
            assert self.proc.poll() is None, f"varpd exited:\n{self.log.read_text()}"
            try:
                status, body = http_get(self.sock, "/v1/health", timeout=1.0)
            except OSError:
                return False
            return status == 200 and body.get("ready") is True

        wait_for(ready, 20, "varpd to be ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(2)

    def get(self, path: str, **query) -> tuple[int, dict]:
        return http_get(self.sock, path + ("?" + urlencode(query) if query else ""))

    def lookup(self, **query) -> dict:
        status, body = self.get(f"/v1/overlays/{VX}/lookup", **query)
        assert status == 200, body
        return body

    def cache(self) -> dict:
        status, body = self.get(f"/v1/overlays/{VX}/cache")
        assert status == 200, body
        return body

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return self.lab.exec(self.lab.host_ns(self.h1), varpd_bin(), "--socket", str(self.sock), *args,
                             check=False, timeout=15)


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    lab = Lab(seed_hosts(2), prefix=session_prefix("vt-", "k"))
    daemon = Daemon(lab, tmp_path_factory.mktemp("lookup"))
    try:
        lab.up()
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        lab.down()


def test_known_mac_comes_from_the_backend_then_from_the_cache(d):
    mac = d.h2.guest_mac
    before = d.cache()
    first = d.lookup(mac=mac.upper())  # any case: the answer names the canonical MAC
    assert first["query"] == mac and first["kind"] == "mac"
    assert (first["answer"], first["origin"]) == (f"{d.h2.underlay_ip}:4789", "backend")
    assert first["backend"]["plugin"] == "files" and first["backend"]["elapsed_ms"] >= 0
    assert first["stored_in_cache"] is True and first["local"] is False
    assert first["kernel"] == []  # on-demand: nothing asked the kernel for it yet
    second = d.lookup(mac=mac)
    assert (second["answer"], second["origin"], second["backend"]) == (first["answer"], "cache", None)
    assert second["cache"]["negative"] is False and second["cache"]["age"] >= 0
    assert 0 < second["cache"]["ttl_remaining"] <= 300
    after = d.cache()
    assert after["hits"] == before["hits"] + 1 and after["misses"] >= before["misses"] + 1
    assert after["positive"] >= before["positive"] + 1 and after["ttl"] == 300 and after["negative_ttl"] == 5


def test_own_mac_is_local(d):
    assert d.lookup(mac=d.h1.guest_mac, fresh=1)["local"] is True


def test_unknown_mac_is_a_negative_answer_cached_negatively(d):
    before = d.cache()
    first = d.lookup(mac=UNKNOWN_MAC)
    assert (first["answer"], first["origin"]) == ("unknown", "backend")
    second = d.lookup(mac=UNKNOWN_MAC)
    assert second["origin"] == "cache" and second["cache"]["negative"] is True
    assert second["cache"]["ttl_remaining"] <= 5
    after = d.cache()
    assert after["negative_hits"] == before["negative_hits"] + 1 and after["negative"] >= 1


def test_ipv6_is_an_ndp_lookup_answered_with_the_mac(d):
    out = d.lookup(ip=d.h2.guest_ip6)
    assert (out["kind"], out["answer"], out["origin"]) == ("ndp", d.h2.guest_mac, "backend")


def test_the_cache_entries_gauge_follows_expiry_without_another_insert(d):
    """Expired answers are swept on a timer (issue #12: /metrics said 49,520 for a cache of 4)."""
    out = d.lookup(mac="02:00:00:00:00:43")
    assert out["answer"] == "unknown" and out["stored_in_cache"] is True, out
    assert d.cache()["negative"] >= 1
    gauge = f'varpd_cache_entries{{overlay="{VX}"}}'

    def gauge_is_live_count():
        metrics = d.get("/metrics")[1]
        value = [float(ln.split()[-1]) for ln in metrics.splitlines() if ln.startswith(gauge)]
        cache = d.cache()
        return cache["negative"] == 0 and value == [cache["entries"]]

    wait_for(gauge_is_live_count, 10, "the expired negative answer to be swept")


@pytest.mark.parametrize("zone", [VX, "eth0"])
def test_a_zone_index_is_dropped_the_overlay_is_the_link(d, zone):
    out = d.lookup(ip=f"{d.h2.guest_ip6}%{zone}")
    assert (out["kind"], out["answer"]) == ("ndp", d.h2.guest_mac), out


def test_fresh_asks_the_backend_and_leaves_the_cache_alone(d):
    d.lookup(mac=d.h2.guest_mac)  # cached (by this or an earlier lookup)
    before = d.cache()
    out = d.lookup(mac=d.h2.guest_mac, fresh=1)
    assert out["origin"] == "backend" and out["fresh"] is True and out["stored_in_cache"] is False
    assert out["cache"]["answer"] == out["answer"]  # the cached entry, shown alongside
    after = d.cache()
    # (not `entries`: an earlier test's negative entry may expire in between)
    assert {k: after[k] for k in ("hits", "misses", "positive", "negative_hits")} == \
           {k: before[k] for k in ("hits", "misses", "positive", "negative_hits")}


def test_override_wins_and_is_in_the_kernel(d):
    mac = "02:00:00:00:00:77"
    assert d.cli("modify-overlay", "-s", f"{mac}=192.0.2.9:4789", VX).returncode == 0
    try:
        out = d.lookup(mac=mac)
        assert (out["answer"], out["origin"], out["backend"]) == ("192.0.2.9:4789", "override", None)
        assert [(e["kind"], e["destination"], e["origin"]) for e in out["kernel"]] == \
               [("fdb", "192.0.2.9:4789", "manual")]
        fresh = d.lookup(mac=mac, fresh=1)  # the override still wins; the backend's view is shown too
        assert fresh["origin"] == "override" and fresh["backend"]["answer"] == "unknown"
        assert d.cli("modify-overlay", "-s", f"{mac}=drop", VX).returncode == 0
        assert d.lookup(mac=mac)["answer"] == "drop"
    finally:
        d.cli("modify-overlay", "-d", mac, VX)
    assert d.lookup(mac=mac)["origin"] in ("backend", "cache")


def test_a_kernel_miss_shows_up_as_cache_and_kernel_entry(d):
    """A guest's ARP for host2's guest makes a real L3 miss; the lookup then reports the neighbour entry."""
    lab = d.lab
    lab.attach_guest(d.h1)
    lab.exec(lab.guest_ns(d.h1), "ping", "-n", "-c", "1", "-W", "1", d.h2.guest_ip4, check=False)
    out = wait_for(lambda: (o := d.lookup(ip=d.h2.guest_ip4))["kernel"] and o, 5, "the neighbour entry")
    assert (out["kind"], out["answer"]) == ("arp", d.h2.guest_mac)
    assert out["origin"] == "cache"  # the miss looked it up first
    assert [(e["kind"], e["destination"], e["origin"]) for e in out["kernel"]] == \
           [("neigh", d.h2.guest_mac, "on-demand")]
    fdb = d.lookup(mac=d.h2.guest_mac)["kernel"]
    assert [(e["kind"], e["destination"]) for e in fdb] == [("fdb", f"{d.h2.underlay_ip}:4789")]


@pytest.mark.parametrize("query, status, message", [
    ({"mac": "zz:00:00:00:00:01"}, 400, "mac: 'zz:00:00:00:00:01' is not a MAC address"),
    ({"ip": "10.55.55"}, 400, "ip: '10.55.55' is not an IPv4 or IPv6 address"),
    ({"ip": "10.55.55.2%eth0"}, 400, "ip: '10.55.55.2%eth0': an IPv4 address has no zone (%eth0)"),
    ({}, 400, "exactly one of the query parameters mac=MAC or ip=IP"),
    ({"mac": UNKNOWN_MAC, "ip": "10.55.55.3"}, 400, "exactly one of"),
    ({"mac": UNKNOWN_MAC, "fresh": "maybe"}, 400, "fresh: 'maybe' is not a boolean"),
])
def test_bad_queries_are_400_naming_the_parameter(d, query, status, message):
    got, body = d.get(f"/v1/overlays/{VX}/lookup", **query)
    assert got == status and message in body["error"]


def test_unknown_overlay_is_404(d):
    assert d.get("/v1/overlays/nope/lookup", mac=UNKNOWN_MAC) == (404, {"error": "overlay 'nope' not found"})
    assert d.get("/v1/overlays/nope/cache")[0] == 404
    res = d.cli("lookup-overlay", "nope", UNKNOWN_MAC)
    assert res.returncode == 1 and res.stderr == "varpd: lookup-overlay: overlay 'nope' not found\n"


def test_lookup_overlay_and_show_overlay_c_commands(d):
    res = d.cli("lookup-overlay", VX, d.h2.guest_mac)
    assert res.returncode == 0, res.stderr
    header, row = res.stdout.splitlines()
    assert header.split() == ["LINK", "TARGET", "ANSWER", "ORIGIN", "AGE", "TTL", "BACKEND", "KERNEL"]
    assert row.split()[:4] == [VX, d.h2.guest_mac, f"{d.h2.underlay_ip}:4789", "cache"]
    res = d.cli("lookup-overlay", "-F", "-p", "-o", "answer,origin,backend", VX, d.h2.guest_ip4)
    assert res.returncode == 0, res.stderr
    answer, origin, backend = res.stdout.strip().replace("\\:", "\x00").split(":")
    assert (answer.replace("\x00", ":"), origin) == (d.h2.guest_mac, "backend") and backend.startswith("files ")
    res = d.cli("lookup-overlay", VX, "not-a-mac")
    assert res.returncode == 1 and "mac: 'not-a-mac' is not a MAC address" in res.stderr
    res = d.cli("show-overlay", "-c", "-p", "-o", "link,ttl,negttl", VX)
    assert (res.returncode, res.stdout) == (0, f"{VX}:300:5\n")
    assert d.cli("show-overlay", "-c", VX).stdout.split()[:3] == ["LINK", "ENTRIES", "POSITIVE"]


def test_json_log_lines_parse(d):
    lines = [ln for ln in d.log.read_text().splitlines() if ln.strip()]
    objs = [json.loads(ln) for ln in lines]  # every line is one JSON object
    started = [o for o in objs if o["event"] == "started" and o.get("overlay") == VX]
    assert started and started[0]["vni"] == 23 and started[0]["mode"] == "on-demand"
    assert started[0]["logger"] == "varpd.daemon.overlay" and started[0]["level"] == "info"
    assert any(o["event"] == "ready" for o in objs)
    assert all({"ts", "level", "logger", "event"} <= set(o) for o in objs)
