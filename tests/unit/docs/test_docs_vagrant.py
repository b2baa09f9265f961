"""The Vagrantfile: `vagrant validate` passes with its defaults and with another environment's
settings (VARPD_*), and the per-host configs it provisions are generated from the underlay addresses
(the seed's hosts.json with record N on host N), not kept as copies."""
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
from varpd.lab import vagrant

ROOT = Path(__file__).resolve().parents[3]
VAGRANTFILE = ROOT / "Vagrantfile"
HOSTS = {"zlan": "192.168.56.11", "zlan2": "192.168.56.12", "zlan3": "192.168.56.13"}
# what the offline test environment (shared/vagrant-offline) sets
OFFLINE = {"VARPD_BOX": "local/bookworm64", "VARPD_LIBVIRT_DRIVER": "qemu", "VARPD_LIBVIRT_MGMT_NET": "varpd-mgmt",
           "VARPD_LIBVIRT_MGMT_ADDR": "198.51.100.0/25", "VARPD_LIBVIRT_UNDERLAY_NET": "varpd-underlay",
           "VARPD_UNDERLAY": "198.51.100.211/25,198.51.100.212/25,198.51.100.213/25", "VARPD_BOOT_TIMEOUT": "1200"}


@pytest.mark.skipif(shutil.which("vagrant") is None,
                    reason="vagrant is not installed (Debian: apt-get install vagrant); CI installs it")
@pytest.mark.parametrize("settings", [{}, OFFLINE], ids=["defaults", "offline-environment"])
def test_vagrant_validate(tmp_path, settings):
    # --ignore-provider: validation without a provider (no VirtualBox, no vagrant-libvirt plugin here);
    # the dot-file and home directories go to tmp_path so the repo gets no .vagrant/
    env = dict(os.environ, VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"), VAGRANT_HOME=str(tmp_path / "home"),
               VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_NO_COLOR="1", VAGRANT_CWD=str(ROOT), **settings)
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


def test_a_bad_underlay_is_refused_with_one_line(tmp_path):
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed")
    env = dict(os.environ, VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"), VAGRANT_HOME=str(tmp_path / "home"),
               VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_NO_COLOR="1", VARPD_UNDERLAY="198.51.100.211/25")
    res = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode != 0 and "VARPD_UNDERLAY: expected 3 ADDR/LEN" in res.stderr


def test_vagrantfile_layout():
    text = VAGRANTFILE.read_text()
    assert 'BOX = ENV.fetch("VARPD_BOX", "debian/bookworm64")' in text
    assert re.search(r"^BOX = ", text, re.M).start() < text.index("Vagrant.configure")
    default = ",".join(f"{ip}/24" for ip in HOSTS.values())
    assert f'ENV.fetch("VARPD_UNDERLAY", "{default}")' in text and vagrant.DEFAULT_UNDERLAY == default
    for var in ("VARPD_LIBVIRT_DRIVER", "VARPD_LIBVIRT_MGMT_NET", "VARPD_LIBVIRT_MGMT_ADDR",
                "VARPD_LIBVIRT_UNDERLAY_NET", "VARPD_SERIAL_DIR", "VARPD_BOOT_TIMEOUT"):
        assert f'ENV["{var}"]' in text or f'ENV.fetch("{var}"' in text, var
        assert re.search(rf"^#\s+{var}\s", text, re.M), f"{var} is not described in the header"
    for name, n in zip(HOSTS, range(0x11, 0x14)):
        assert f'"{name}" => "52:54:00:0a:00:{n:02x}"' in text, f"{name}: no fixed management MAC"
    assert 'path: "scripts/provision-host.sh", args: [name, UNDERLAY]' in text
    assert 'synced_folder ".", "/vagrant"' in text


def test_generated_hosts_json_is_the_seed_on_the_underlay(tmp_path):
    seed = json.loads((ROOT / "configs" / "hosts.json").read_text())
    underlay = vagrant.parse_underlay(OFFLINE["VARPD_UNDERLAY"])
    mine, others = vagrant.write_host("zlan3", underlay, tmp_path)
    moved = {f"192.0.2.{i}": str(u.ip) for i, u in enumerate(underlay, start=1)}
    assert json.loads((tmp_path / "hosts.json").read_text()) == {mac: dict(rec, ip=moved[rec["ip"]])
                                                                 for mac, rec in seed.items()}
    assert mine["ip"] == "198.51.100.213" and mine["mac"] == "de:ad:be:ef:00:02"
    assert [r["arp"] for r in others] == ["10.55.55.2", "10.55.55.3"]
    assert len(load_hosts(tmp_path / "hosts.json").by_mac) == 3


@pytest.mark.parametrize("name, ip", HOSTS.items())
def test_host_configs(name, ip, tmp_path):
    vagrant.write_host(name, vagrant.parse_underlay(vagrant.DEFAULT_UNDERLAY), tmp_path)
    cfg = load_config(tmp_path / "varpd.toml")
    assert cfg.daemon.state_dir == Path("/var/lib/varpd") and cfg.daemon.socket == Path("/run/varpd/varpd.sock")
    (ov,) = cfg.overlays
    assert (ov.name, ov.vni, ov.search, ov.bridge) == ("overlay0", 23, "files", "br-overlay0")
    assert ov.properties["vxlan/listen_ip"] == ip
    assert ov.properties["files/config"] == str(tmp_path / "hosts.json")
    mine = [r for r in load_hosts(tmp_path / "hosts.json").by_mac.values() if str(r.dest.ip) == ip]
    assert len(mine) == 1


@pytest.mark.parametrize("text, why", [("198.51.100.1/25", "expected 3"), ("a/1,b/2,c/3", "does not appear"),
                                       ("198.51.100.1,198.51.100.2,198.51.100.3", "has no /LEN"),
                                       ("198.51.100.1/25,198.51.100.1/25,198.51.100.3/25", "distinct"),
                                       ("198.51.100.1/25,2001:db8::2/64,198.51.100.3/25", "one family")])
def test_bad_underlays_are_refused(text, why):
    with pytest.raises(ValueError, match=why):
        vagrant.parse_underlay(text)


def test_the_generator_says_what_is_wrong_in_one_line(tmp_path, capsys):
    assert vagrant.main(["--host", "zlan", "--underlay", "198.51.100.1/25", "--etc", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "VARPD_UNDERLAY" in err


@pytest.mark.parametrize("script", ["provision-host.sh", "vagrant-check.sh"])
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
    assert "python\" -m varpd.lab.vagrant --host \"$HOST\" --underlay \"$UNDERLAY\"" in text
    assert "ln -sf \"$VENV/bin/varpd\" /usr/local/bin/varpd" in text  # varpd on PATH in the VMs
    assert "|| true" not in text.split('say "systemd units"')[1]  # a failing check fails the provision
    assert 'pip" install --quiet --disable-pip-version-check "$BUILD"' in text and "SRC=${VARPD_SRC:-/vagrant}" in text
    for pkg in ("python3-venv", "iproute2"):
        assert pkg in text
    for page in ("man8/varpd.8", "man5/varpd.toml.5", "man5/hosts.json.5"):
        assert f"/usr/local/share/man/{page}" in text  # varpd.service's Documentation= points at them
