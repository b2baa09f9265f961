"""`varpd lab up/status/exec/down`: the README's main job, and it leaves nothing behind."""

import os
import subprocess

import pytest

from varpd.lab.topology import list_namespaces, varpd_bin

pytestmark = pytest.mark.integration


def varpd(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([varpd_bin(), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_lab_up_exec_status_down(tmp_path):
    prefix = f"vt-{os.getpid()}lc-"
    common = ("lab", "--prefix", prefix, "--dir", str(tmp_path / "lab"))
    try:
        out = varpd(*common, "up", "--hosts", "3").stdout
        assert "host3: underlay 192.0.2.3, varpd ready" in out
        assert varpd(*common, "exec", "host1-guest", "ping", "-c1", "-W2", "10.55.55.4").returncode == 0
        status = varpd(*common, "status").stdout
        assert status.count("vx23 ONLINE push") == 3
        assert status.startswith("backend: files (push), no server"), status
        again = varpd(*common, "up", check=False)
        assert again.returncode == 1 and "already up" in again.stderr
    finally:
        down = varpd(*common, "down", check=False)
    assert "removed 7 namespaces" in down.stdout
    assert list_namespaces(prefix) == []
    assert not (tmp_path / "lab").exists()
