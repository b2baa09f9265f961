"""The admin API over TCP against a live daemon: off unless configured, loopback-only unless an
allow list says otherwise, 403 for everyone else, and the same 4xx validations as on the socket.

Three host namespaces on one underlay: varpd runs in host1 with `admin_tcp` on every address and
`admin_allow` = loopback + host2; host3 is a client on the same wire that is not allowed.
"""
from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from varpd.lab import Lab, seed_hosts, session_prefix, write_hosts_json, write_varpd_config

PORT = 8179

# one HTTP request from inside a namespace; prints "STATUS BODY" (status 0: no connection)
_CLIENT = r"""
import sys, urllib.request, urllib.error
method, url, body = sys.argv[1], sys.argv[2], sys.argv[3].encode() or None
req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=3) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except OSError as e:
    print(0, repr(e))
"""


def http(lab: Lab, ns: str, method: str, url: str, body: dict | None = None) -> tuple[int, object]:
    out = lab.exec(ns, sys.executable, "-c", _CLIENT, method, url, json.dumps(body) if body else "").stdout
    status, _, text = out.strip().partition(" ")
    try:
        return int(status), json.loads(text)
    except ValueError:
        return int(status), text


def _daemon_config(lab_dir, host, hosts, daemon_lines: str):
    d = lab_dir / host.name
    (d / "state").mkdir(parents=True, exist_ok=True)
    write_hosts_json(d / "hosts.json", hosts)
    path = write_varpd_config(d / "varpd.toml", host, hosts_json=d / "hosts.json", state_dir=d / "state",
                              sock=d / "varpd.sock")
    path.write_text(path.read_text().replace("[daemon]\n", f"[daemon]\n{daemon_lines}\n", 1))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("admin")
    hosts = seed_hosts(3)
    lab = Lab(hosts, prefix=session_prefix("vt-", "ha"))
    try:
        lab.up()
        h1 = hosts[0]
        cfg = _daemon_config(workdir, h1, hosts, f'admin_tcp = "0.0.0.0:{PORT}"\n'
                                                 f'admin_allow = ["127.0.0.0/8", "{hosts[1].underlay_ip}/32"]')
        lab.start_varpd(h1, cfg)
        lab.wait_ready(h1)
        lab.workdir = workdir
        yield lab
    finally:
        lab.down()


def test_unix_socket_keeps_mode_0660(lab):
    mode = os.stat(lab.socket_path(lab.hosts[0])).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660, oct(mode)


def test_loopback_is_served(lab):
    status, body = http(lab, lab.host_ns(lab.hosts[0]), "GET", f"http://127.0.0.1:{PORT}/v1/health")
    assert status == 200 and body["ready"] is True, body


def test_allowed_peer_is_served(lab):
    h1, h2 = lab.hosts[:2]
    status, body = http(lab, lab.host_ns(h2), "GET", f"http://{h1.underlay_ip}:{PORT}/v1/overlays/vx23")
    assert status == 200 and body["vni"] == 23, body


def test_other_peer_gets_403_and_changes_nothing(lab):
    h1, h3 = lab.hosts[0], lab.hosts[2]
    base = f"http://{h1.underlay_ip}:{PORT}"
    status, body = http(lab, lab.host_ns(h3), "GET", f"{base}/v1/health")
    assert status == 403, body
    msg = body["error"]
    assert h3.underlay_ip in msg and "admin_allow" in msg and "\n" not in msg, msg
    status, body = http(lab, lab.host_ns(h3), "DELETE", f"{base}/v1/overlays/vx23")
    assert status == 403, body
    assert lab.api(h1, "/v1/overlays/vx23")[0] == 200, "a refused request must not reach the daemon"
    status, _ = http(lab, lab.host_ns(h3), "GET", f"{base}/metrics")
    assert status == 403


NEW = {"name": "vx99", "vni": 99, "search": "files", "properties": {"vxlan/listen_ip": "192.0.2.1"}}


@pytest.mark.parametrize("method,path,body,field", [
    ("POST", "/v1/overlays", {**NEW, "vni": 1 << 24}, "vni"),
    ("POST", "/v1/overlays", {**NEW, "vni": "x"}, "vni"),
    ("POST", "/v1/overlays", {**NEW, "search": "nope"}, "nope"),
    ("PUT", "/v1/overlays/vx23/cache/de:ad:be:ef:00:zz", {"destination": "192.0.2.2:4789"}, "mac"),
    ("DELETE", "/v1/overlays/vx23/cache/not-a-mac", None, "mac"),
], ids=["vni-too-big", "vni-not-a-number", "unknown-plugin", "bad-mac-set", "bad-mac-delete"])
def test_bad_input_is_400_naming_the_field(lab, method, path, body, field):
    h1, h2 = lab.hosts[:2]
    status, answer = http(lab, lab.host_ns(h2), method, f"http://{h1.underlay_ip}:{PORT}{path}", body)
    assert status == 400, answer
    msg = answer["error"]
    assert field in msg and "\n" not in msg, msg
    assert lab.exec(lab.host_ns(h1), "ip", "link", "show", "vx99", check=False).returncode != 0
    assert [o["name"] for o in lab.api(h1, "/v1/overlays")[1]] == ["vx23"]


def test_non_loopback_listen_without_allow_list_is_refused_at_load(lab):
    h2 = lab.hosts[1]
    cfg = _daemon_config(lab.workdir, h2, lab.hosts, f'admin_tcp = "{h2.underlay_ip}:{PORT}"')
    proc = lab.start_varpd(h2, cfg)
    rc = proc.wait(15)
    log = lab.log_path(h2).read_text()
    assert rc != 0, log
    lines = [ln for ln in log.splitlines() if "admin_allow" in ln]
    assert lines and "admin_tcp" in lines[0] and h2.underlay_ip in lines[0], log
    assert "Traceback" not in log
    # and nothing listens there
    status, _ = http(lab, lab.host_ns(lab.hosts[2]), "GET", f"http://{h2.underlay_ip}:{PORT}/v1/health")
    assert status == 0
    assert not (lab.workdir / h2.name / "varpd.sock").exists()
