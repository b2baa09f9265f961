"""`varpd lab up/status/exec/down`: the README's main job, and it leaves nothing behind."""

import os
import subprocess

import pytest

from varpd.lab import Lab, seed_hosts
from varpd.lab.checks import reachability
from varpd.lab.topology import list_namespaces, varpd_bin

pytestmark = pytest.mark.integration


def varpd(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([varpd_bin(), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_lab_up_exec_status_down(tmp_path):
    """`lab up` proves the overlay itself (every guest pings every other, both families); `lab down`
    removes what the lab recorded and nothing else: not a namespace that merely shares the prefix
    (nor what runs in it), not a file someone else put into --dir (issue #12, 18)."""
    prefix = f"vt-{os.getpid()}lc-"
    common = ("lab", "--prefix", prefix, "--dir", str(tmp_path / "lab"))
    stranger_ns, sleeper = f"{prefix}other", None
    try:
        out = varpd(*common, "up", "--hosts", "3").stdout
        assert "host3: underlay 192.0.2.3, varpd ready" in out
        assert "[lab] overlay works: 12 of 12 guest-to-guest pings answered (3 guests, IPv4 and IPv6)" in out, out
        assert varpd(*common, "exec", "host1-guest", "ping", "-c1", "-W2", "10.55.55.4").returncode == 0
        status = varpd(*common, "status").stdout
        assert status.count("vx23 ONLINE push") == 3
        assert status.startswith("backend: files (push), no server"), status
        again = varpd(*common, "up", check=False)
        assert again.returncode == 1 and "already up" in again.stderr

        # the checker names what does not answer: host3's guest unplugged
        lab = Lab(seed_hosts(3), prefix=prefix)
        lab.exec(lab.guest_ns("host3"), "ip", "link", "set", "eth0", "down")
        probes, failed = reachability(lab, lab.hosts)
        assert probes == 12 and len(failed) == 8 and all("host3" in str(p) for p in failed), [str(p) for p in failed]

        subprocess.run(["ip", "netns", "add", stranger_ns], check=True)
        sleeper = subprocess.Popen(["ip", "netns", "exec", stranger_ns, "sleep", "60"])
        (tmp_path / "lab" / "keep-me").write_text("not the lab's\n")
    finally:
        down = varpd(*common, "down", check=False)
        try:
            assert "removed 7 namespaces" in down.stdout, down.stdout + down.stderr
            assert list_namespaces(prefix) == ([stranger_ns] if sleeper else [])
            assert sleeper is None or sleeper.poll() is None, "lab down killed a process it did not start"
            assert sorted(os.listdir(tmp_path / "lab")) == ["keep-me"]
        finally:
            if sleeper is not None:
                sleeper.kill()
                sleeper.wait()
                subprocess.run(["ip", "netns", "del", stranger_ns])


def test_lab_down_refuses_a_directory_that_is_no_lab(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("x")
    res = varpd("lab", "--prefix", f"vt-{os.getpid()}ld-", "--dir", str(tmp_path), "down", check=False)
    assert res.returncode == 1 and res.stderr == (
        f"varpd: lab: {tmp_path} is not a lab directory (no readable lab.json): nothing removed\n")
    assert (tmp_path / "data" / "precious.txt").read_text() == "x"
