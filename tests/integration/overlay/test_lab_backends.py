"""`varpd lab up --backend etcd|http|svp|evpn`: the lab runs the backend's server in its underlay namespace,
guests ping across the overlay, a mapping change made through the backend reaches a host, and
`lab down` (even after a killed `lab up`) leaves no namespace and no server process behind."""

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from _overlay_helpers import wait_for
from varpd.lab.backends import ETCD_BIN
from varpd.lab.topology import list_namespaces, session_prefix, varpd_bin

pytestmark = pytest.mark.integration

G1_MAC, G2_MAC, G2_IP4 = "de:ad:be:ef:00:00", "de:ad:be:ef:00:01", "10.55.55.3"


def varpd(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([varpd_bin(), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def processes_using(path: Path) -> list[str]:
    """Live processes whose command line names `path` (the lab's dir: its servers and daemons)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def fdb_port(common: tuple, host: str, mac: str) -> str | None:
    """The VXLAN port `host`'s kernel sends `mac` to, None while it has no entry."""
    out = varpd(*common, "exec", host, "bridge", "-j", "fdb", "show", "dev", "vx23").stdout
    for e in json.loads(out or "[]"):
        if e.get("mac") == mac and "dst" in e:
            return f"{e['dst']}:{e.get('port', 4789)}"
    return None


def require_backend(name: str) -> None:
    if name == "etcd":
        if not os.path.exists(ETCD_BIN):
            pytest.skip(f"{ETCD_BIN} is missing: install the Debian package etcd-server (CI does)")
        pytest.importorskip("aetcd")
    if name == "evpn":
        from varpd.lab.frr import frr_missing
        from varpd_plugins.gobgp_api import missing_reason

        if (reason := frr_missing() or missing_reason() or (None if shutil.which("gobgpd") else "no gobgpd")):
            pytest.skip(reason)


@pytest.fixture
def lab_args(request, tmp_path):
    """(prefix, dir) for one lab; whatever the test leaves up is taken down."""
    callspec = getattr(request.node, "callspec", None)
    name = callspec.params["backend"] if callspec else request.node.name[5:9]
    prefix, workdir = session_prefix("vt-", f"lb{name}"), tmp_path / "lab"
    yield ("lab", "--prefix", prefix, "--dir", str(workdir)), prefix, workdir
    if list_namespaces(prefix) or workdir.exists():
        varpd("lab", "--prefix", prefix, "--dir", str(workdir), "down", check=False)


def change_mapping(backend: str, common: tuple, workdir: Path) -> None:
    """Send guest2's MAC to 192.0.2.2:4790 through the backend itself."""
    if backend == "etcd":  # as host2 would: write its record into etcd
        varpd(*common, "exec", "host2", varpd_bin(), "register", "--once", "--endpoints", "192.0.2.254:2379",
              "--vni", "23", "--ip", "192.0.2.2", "--port", "4790", "--vnic", f"{G2_MAC},arp={G2_IP4}")
    else:  # the server re-reads the lab's hosts.json and streams the change
        path = workdir / "hosts.json"
        data = json.loads(path.read_text())
        data[G2_MAC]["port"] = 4790
        tmp = path.with_name(".hosts.json.new")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


@pytest.mark.parametrize("backend", ["etcd", "http", "svp", "evpn"])
def test_lab_up_with_a_backend_server(backend, lab_args):
    require_backend(backend)
    common, prefix, workdir = lab_args
    out = varpd(*common, "up", "--hosts", "2", "--backend", backend).stdout
    assert f"[lab] {backend} server up at 192.0.2.254:" in out, out
    mode = "push" if backend in ("etcd", "evpn") else "on-demand"
    assert f"host2: underlay 192.0.2.2, varpd ready ({backend}, {mode})" in out, out
    state = json.loads((workdir / "lab.json").read_text())
    server_pid = state["server_pid"]

    status = varpd(*common, "status").stdout
    assert f"backend: {backend} ({mode}), server 192.0.2.254:" in status and f"pid {server_pid} alive" in status
    assert status.count(f"vx23 ONLINE {mode}") == 2, status

    assert varpd(*common, "exec", "host1-guest", "ping", "-c3", "-i0.2", "-W2", G2_IP4, check=False).returncode == 0
    assert fdb_port(common, "host1", G2_MAC) == "192.0.2.2:4789"
    # svp withdraws through its shootdown log, polled every 5-10 s: too slow here; an EVPN route carries
    # no UDP port (every VTEP listens on the overlay's own)
    if backend not in ("svp", "evpn"):
        change_mapping(backend, common, workdir)
        wait_for(lambda: fdb_port(common, "host1", G2_MAC) == "192.0.2.2:4790", 8,
                 f"host1 to follow the change made through {backend}")

    down = varpd(*common, "down").stdout
    assert f"removed 5 namespaces, stopped the {backend} server" in down, down
    assert list_namespaces(prefix) == []
    assert processes_using(workdir) == []
    assert not Path(f"/proc/{server_pid}/cmdline").exists() or not Path(f"/proc/{server_pid}/cmdline").read_bytes()


def test_down_after_a_killed_up_stops_the_server(lab_args):
    """`lab up` dies (kill -9) once etcd runs: `lab down` still finds etcd through lab.json."""
    require_backend("etcd")
    common, prefix, workdir = lab_args
    up = subprocess.Popen([varpd_bin(), *common, "up", "--hosts", "2", "--backend", "etcd"],
                          stdout=subprocess.PIPE, text=True)
    try:
        for line in up.stdout:
            if "etcd server up" in line:
                break
        up.send_signal(signal.SIGKILL)
    finally:
        up.kill()
        up.wait(10)
        up.stdout.close()
    assert [p for p in processes_using(workdir) if "/usr/bin/etcd" in p], "etcd should outlive `lab up`"
    assert varpd(*common, "status").stdout.startswith("backend: etcd (push), server 192.0.2.254:2379 pid ")
    down = varpd(*common, "down").stdout
    assert "stopped the etcd server" in down, down
    assert list_namespaces(prefix) == []
    assert processes_using(workdir) == []


def test_a_backend_that_cannot_list_refuses_push(lab_args):
    common, prefix, _ = lab_args
    res = varpd(*common, "up", "--backend", "http", "--mode", "push", check=False)
    assert res.returncode == 1
    assert res.stderr.strip() == ("varpd: lab: --mode push: the http backend cannot list its mapping; "
                                  "use on-demand")
    assert list_namespaces(prefix) == []


def test_a_failed_up_stops_its_server(lab_args):
    """`lab up` fails after its server started (host1's dir is a file): server and namespaces are gone."""
    common, prefix, workdir = lab_args
    workdir.mkdir()
    (workdir / "host1").write_text("in the way\n")
    res = varpd(*common, "up", "--hosts", "2", "--backend", "http", check=False)
    assert res.returncode == 1 and "[lab] http server up" in res.stdout, res.stdout + res.stderr
    assert "lab up failed, everything removed" in res.stderr and "host1" in res.stderr, res.stderr
    assert list_namespaces(prefix) == []
    assert processes_using(workdir) == []
