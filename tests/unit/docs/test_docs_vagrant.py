"""The Vagrantfile: `vagrant validate` passes, and its hosts agree with the per-host configs
and configs/hosts-vagrant.json (the seed's hosts.json on the private network 192.168.56.11-13)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from varpd.config.daemon import load_config
from varpd.config.hosts import load_hosts

ROOT = Path(__file__).resolve().parents[3]
VAGRANTFILE = ROOT / "Vagrantfile"
HOSTS = {"zlan": "192.168.56.11", "zlan2": "192.168.56.12", "zlan3": "192.168.56.13"}


@pytest.mark.skipif(shutil.which("vagrant") is None,
                    reason="vagrant is not installed (Debian: apt-get install vagrant); CI installs it")
def test_vagrant_validate(tmp_path):
    # --ignore-provider: validation without a provider (no VirtualBox, no vagrant-libvirt plugin here);
    # the dot-file and home directories go to tmp_path so the repo gets no .vagrant/
    env = dict(os.environ, VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"), VAGRANT_HOME=str(tmp_path / "home"),
               VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_NO_COLOR="1", VAGRANT_CWD=str(ROOT))
    env.pop("VAGRANT_DEFAULT_PROVIDER", None)
    had_dot = (ROOT / ".vagrant").exists()
    res = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "validated successfully" in res.stdout
    assert had_dot or not (ROOT / ".vagrant").exists(), "vagrant validate left a .vagrant/ in the repo"


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed (it comes with vagrant)")
def test_vagrantfile_is_valid_ruby_including_provider_blocks():
    res = subprocess.run(["ruby", "-c", str(VAGRANTFILE)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_vagrantfile_layout():
    text = VAGRANTFILE.read_text()
    assert 'BOX = ENV.fetch("VARPD_BOX", "debian/bookworm64")' in text
    assert re.search(r"^BOX = ", text, re.M).start() < text.index("Vagrant.configure")
    for name, ip in HOSTS.items():
        assert re.search(rf'"{name}"\s*=>\s*"{re.escape(ip)}"', text), name
    assert 'path: "scripts/provision-host.sh", args: [name]' in text
    assert 'synced_folder ".", "/vagrant"' in text
    for provider in ("libvirt", "virtualbox"):
        block = re.search(rf"provider :{provider} do \|(\w+)\|(.*?)\n  end", text, re.S)
        assert block, provider
        settings = set(re.findall(rf"{block.group(1)}\.(\w+)", block.group(2)))
        assert settings == {"memory", "cpus"}, f"{provider}: memory and cpus only, got {settings}"


def test_hosts_vagrant_json_is_the_seed_on_the_private_network():
    seed = json.loads((ROOT / "configs" / "hosts.json").read_text())
    vagrant = json.loads((ROOT / "configs" / "hosts-vagrant.json").read_text())
    moved = {f"192.0.2.{i}": ip for i, ip in enumerate(HOSTS.values(), start=1)}
    assert vagrant == {mac: dict(rec, ip=moved[rec["ip"]]) for mac, rec in seed.items()}
    assert len(load_hosts(ROOT / "configs" / "hosts-vagrant.json").by_mac) == 3


@pytest.mark.parametrize("name, ip", HOSTS.items())
def test_host_configs(name, ip):
    cfg = load_config(ROOT / "configs" / f"{name}.toml")
    assert cfg.daemon.state_dir == Path("/var/lib/varpd") and cfg.daemon.socket == Path("/run/varpd/varpd.sock")
    (ov,) = cfg.overlays
    assert (ov.name, ov.vni, ov.search, ov.bridge) == ("overlay0", 23, "files", "br-overlay0")
    assert ov.properties["vxlan/listen_ip"] == ip
    assert ov.properties["files/config"] == "/etc/varpd/hosts.json"
    # the host's own record is the one with its address: the guest of scripts/add-guest.sh
    mine = [r for r in load_hosts(ROOT / "configs" / "hosts-vagrant.json").by_mac.values() if str(r.dest.ip) == ip]
    assert len(mine) == 1


@pytest.mark.parametrize("script", ["provision-host.sh", "add-guest.sh"])
def test_scripts_parse_and_are_executable(script):
    path = ROOT / "scripts" / script
    assert os.access(path, os.X_OK)
    res = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    if shutil.which("shellcheck"):
        res = subprocess.run(["shellcheck", "-S", "warning", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout


def test_provision_installs_the_mapping_and_the_man_pages():
    text = (ROOT / "scripts" / "provision-host.sh").read_text()
    assert '"$SRC/configs/hosts-vagrant.json" "$ETC/hosts.json"' in text
    assert 'pip" install' in text and '"$SRC"' in text and "SRC=${VARPD_SRC:-/vagrant}" in text
    for pkg in ("python3-venv", "iproute2"):
        assert pkg in text
    for page in ("man8/varpd.8", "man5/varpd.toml.5", "man5/hosts.json.5"):
        assert f"/usr/local/share/man/{page}" in text  # varpd.service's Documentation= points at them
