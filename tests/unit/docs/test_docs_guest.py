"""The Vagrant hosts' guest is made by `varpd create-vnic` (scripts/provision-host.sh), with the seed
settings the lab's guests have: the host's own record's MAC and addresses (/24, /64), MTU 1400, eth0
in namespace `guest`, vnic0 on the generated config's overlay.  The script's guest section runs here
under bash with `varpd`, `ip` and `say` as recording stubs; the recorded create-vnic command line is
parsed by varpd's own CLI parser."""
from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from varpd.cli.main import build_parser
from varpd.config.vnic import VnicConfig
from varpd.lab.topology import GUEST_MTU
from varpd.lab.vagrant import DEFAULT_UNDERLAY, HOSTS, parse_underlay, write_host

ROOT = Path(__file__).resolve().parents[3]
PROVISION = ROOT / "scripts" / "provision-host.sh"


def _guest_section() -> str:
    text = PROVISION.read_text()
    start = text.index('say "guest:')
    return text[start:text.index("\n\n", start)]


def _run_guest_section(tmp_path: Path, generated: str, known_vnic: bool) -> list[list[str]]:
    """The guest section with the generator's output read as the script reads it; → the commands run."""
    log = tmp_path / "calls"
    stubs = f"""
log() {{ printf '%s\\0' "$@" >> {log}; printf '\\n' >> {log}; }}
say() {{ :; }}
varpd() {{ log varpd "$@"; [ "$1" != show-vnic ] || [ {int(known_vnic)} = 1 ]; }}
ip() {{ log ip "$@"; return 1; }}
{{ read -r MAC IP4 IP6 OVERLAY; read -r OTHERS; }} <<<"$GUESTS"
"""
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", stubs + _guest_section()], env={"GUESTS": generated,
                         "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return [line.strip("\0").split("\0") for line in log.read_text().splitlines() if line.strip("\0")]


def _generated(name: str, tmp_path: Path) -> tuple[str, dict, str]:
    """What provision-host.sh reads from the generator, the host's own record, the overlay's name."""
    from varpd.lab import vagrant

    etc = tmp_path / name
    out = subprocess.run(["python3", "-c", "import sys; from varpd.lab.vagrant import main; sys.exit(main())",
                          "--host", name, "--underlay", DEFAULT_UNDERLAY, "--etc", str(etc)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    cfg = tomllib.loads((etc / "varpd.toml").read_text())
    me = cfg["overlays"][0]["properties"]["vxlan/listen_ip"]
    (mine,) = [dict(rec, mac=mac) for mac, rec in json.loads((etc / "hosts.json").read_text()).items()
               if rec["ip"] == me]
    assert vagrant.HOSTS == HOSTS
    return out.stdout, mine, cfg["overlays"][0]["name"]


@pytest.mark.parametrize("name", HOSTS)
def test_provisioning_makes_the_hosts_guest_with_create_vnic(name, tmp_path):
    generated, mine, overlay = _generated(name, tmp_path)
    calls = _run_guest_section(tmp_path, generated, known_vnic=False)
    creates = [c for c in calls if c[:2] == ["varpd", "create-vnic"]]
    assert len(creates) == 1, calls
    args = build_parser().parse_args(creates[0][1:])
    assert args.func.__qualname__.startswith("run_with_client")
    cfg = VnicConfig(name=args.name, overlay=args.link, mac=args.mac, type=args.type, netns=args.netns,
                     addresses=args.address, mtu=args.mtu)
    assert cfg == VnicConfig(name="vnic0", overlay=overlay, mac=mine["mac"], netns="guest", mtu=GUEST_MTU,
                             addresses=(f"{mine['arp']}/24", f"{mine['ndp']}/64"))
    assert GUEST_MTU == 1400


def test_a_reprovision_makes_the_vnic_anew(tmp_path):
    generated, _, _ = _generated("zlan", tmp_path)
    calls = _run_guest_section(tmp_path, generated, known_vnic=True)
    assert [c[:2] for c in calls] == [["varpd", "show-vnic"], ["varpd", "delete-vnic"], ["varpd", "create-vnic"]]


def test_provisioning_enables_the_guest_namespace_before_varpd():
    text = PROVISION.read_text()
    assert "add-guest.sh\" " not in text and not (ROOT / "scripts" / "add-guest.sh").exists()
    netns = text.index("systemctl enable --quiet --now varpd-netns@guest.service")
    assert netns < text.index("systemctl restart varpd.service") < text.index("\nvarpd create-vnic")
    assert re.search(r'install -m 0644 "\$SRC/configs/varpd-netns@\.service" /etc/systemd/system/', text)
