"""configs/varpd.service: valid for systemd, hardened as documented, and consistent with the
provisioning script (venv, config path) and the daemon configs (state_dir, socket)."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from varpd.lab.vagrant import DEFAULT_UNDERLAY, HOSTS as HOST_NAMES, parse_underlay, write_host

ROOT = Path(__file__).resolve().parents[3]
UNIT = ROOT / "configs" / "varpd.service"
NETNS_UNIT = ROOT / "configs" / "varpd-netns@.service"
PROVISION = ROOT / "scripts" / "provision-host.sh"


def _directives(unit: Path = UNIT) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def _one(d: dict[str, list[str]], key: str) -> str:
    values = d.get(f"Service.{key}") or d.get(f"Unit.{key}") or d.get(f"Install.{key}")
    assert values and len(values) == 1, f"{key}: {values}"
    return values[0]


def _provision_var(name: str) -> str:
    m = re.search(rf"^{name}=(\S+)$", PROVISION.read_text(), re.M)
    assert m, f"{PROVISION.name} sets no {name}="
    return m.group(1)


def test_execstart_is_the_provisioned_venv():
    argv = shlex.split(_one(_directives(), "ExecStart"))
    venv, etc = _provision_var("VENV"), _provision_var("ETC")
    assert argv == [f"{venv}/bin/varpd", "daemon", "--config", f"{etc}/varpd.toml"]
    text = PROVISION.read_text()
    assert 'python3 -m venv "$VENV"' in text
    assert re.search(r'-m varpd\.lab\.vagrant .*--etc "\$ETC"', text)  # writes $ETC/varpd.toml
    assert re.search(r'install -m 0644 "\$SRC/configs/varpd\.service" /etc/systemd/system/varpd\.service', text)


def test_hardening_and_restart_policy():
    d = _directives()
    want = {
        "Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "RuntimeDirectory": "varpd", "StateDirectory": "varpd",
        "CapabilityBoundingSet": "CAP_NET_ADMIN CAP_NET_RAW CAP_SYS_ADMIN",
        "AmbientCapabilities": "CAP_NET_ADMIN CAP_NET_RAW CAP_SYS_ADMIN",
        # CAP_SYS_ADMIN is for setns(2) into guests' network namespaces only: no mounts (ProtectSystem=
        # holds), no other namespace types
        "SystemCallFilter": "~@mount", "RestrictNamespaces": "net",
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "ReadWritePaths": "/var/lib/varpd /run/varpd",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET",
        "ProtectKernelModules": "yes", "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native", "KillSignal": "SIGTERM",
    }
    for key, value in want.items():
        assert _one(d, key) == value, key
    # the comment saying why SIGTERM is safe for traffic
    assert re.search(r"SIGTERM.*leaves", UNIT.read_text())


@pytest.mark.parametrize("host", HOST_NAMES)
def test_daemon_paths_are_writable_under_the_unit(host, tmp_path):
    """ProtectSystem=strict: the generated config's state_dir and socket must be in ReadWritePaths."""
    write_host(host, parse_underlay(DEFAULT_UNDERLAY), tmp_path)
    cfg = tomllib.loads((tmp_path / "varpd.toml").read_text())["daemon"]
    writable = _one(_directives(), "ReadWritePaths").split()
    assert cfg["state_dir"] in writable
    assert str(Path(cfg["socket"]).parent) in writable
    assert str(Path(cfg["socket"]).parent) == "/run/" + _one(_directives(), "RuntimeDirectory")
    assert cfg["state_dir"] == "/var/lib/" + _one(_directives(), "StateDirectory")


def test_the_guest_namespace_unit_runs_before_varpd_and_keeps_a_namespace():
    """varpd-netns@NS makes NS at boot outside varpd's sandbox (which cannot make namespaces the host
    sees); an existing NS is never replaced (its guest would be cut off)."""
    d = _directives(NETNS_UNIT)
    assert (_one(d, "Type"), _one(d, "RemainAfterExit"), _one(d, "Before")) == ("oneshot", "yes", "varpd.service")
    assert d["Install.WantedBy"] == ["varpd.service"]
    argv = shlex.split(_one(d, "ExecStart"))
    assert argv[:2] == ["/bin/sh", "-c"]
    assert argv[2] == "[ -e /run/netns/%i ] || ip netns add %i; ip -n %i link set lo up"
    assert "ExecStop" not in " ".join(d) and "netns del" not in NETNS_UNIT.read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (Debian: systemd)")
@pytest.mark.parametrize("source, name", [(UNIT, "varpd.service"), (NETNS_UNIT, "varpd-netns@guest.service")])
def test_systemd_analyze_verify(tmp_path, source, name):
    # verify insists that ExecStart's binary exists: point it at one that does (the venv is only on the VMs)
    true = shutil.which("true")
    unit = tmp_path / name
    unit.write_text(source.read_text().replace("/opt/varpd/bin/varpd", true))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                         timeout=60)
    out = (res.stdout + res.stderr).strip()
    if res.returncode != 0 and name not in out:
        pytest.skip(f"systemd-analyze cannot run here: {out[:300]}")
    # unknown keys and bad values are only warnings (exit 0): any line about the unit is a failure
    assert res.returncode == 0 and name not in out, out
