"""scripts/add-guest.sh (the Vagrant hosts' guest) must make the same guest as the lab's Lab.add_guest.

Both are `ip`/`sysctl` command sequences; the script cannot call the lab (which names guests
<prefix><host>-<tag> and needs every host to be a named namespace), so it mirrors it.
Here both sequences are recorded — the lab's by intercepting its `run`, the script's with
--dry-run — normalised (the lab's host namespace is the script's own namespace) and compared,
and the things that matter are checked by name: MAC, MTU, addrgenmode none, accept_dad 0,
addresses.  As root, a real run of both is compared on the kernel's state as well.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from varpd.lab import topology
from varpd.lab.topology import GUEST_MTU, HostSpec, Lab

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "add-guest.sh"
HOST = HostSpec("h", "192.0.2.1", "de:ad:be:ef:00:01", "10.55.55.3", "fe80::4")


def _lab_commands(monkeypatch, host: HostSpec = HOST) -> tuple[list[list[str]], str, str]:
    calls: list[list[str]] = []

    def fake_run(*cmd, check=True, timeout=30.0, input=None):
        calls.append(list(cmd))
        return subprocess.CompletedProcess(list(cmd), 0, "", "")

    monkeypatch.setattr(topology, "run", fake_run)
    lab = Lab([host], prefix="vt-docs-")
    lab.add_guest(host, mac=host.guest_mac, ip4=host.guest_ip4, ip6=host.guest_ip6, vnic="vnic0", tag="guest")
    lab.attach_guest(host, vnic="vnic0", bridge="br-overlay0")
    return calls, lab.host_ns(host), lab.guest_ns(host)


def _script_commands(*args: str) -> list[list[str]]:
    res = subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return [shlex.split(line) for line in res.stdout.splitlines() if line.strip()]


def _normalise(cmds: list[list[str]], host_ns: str | None, guest_ns: str) -> list[list[str]]:
    """The host namespace becomes "this namespace", the guest namespace GUEST; queries are dropped."""
    out = []
    for cmd in cmds:
        if host_ns is not None and cmd[:1] in (["ip"], ["bridge"]) and cmd[1:3] == ["-n", host_ns]:
            cmd = [cmd[0], *cmd[3:]]
        elif host_ns is not None and cmd[:4] == ["ip", "netns", "exec", host_ns]:
            cmd = cmd[4:]
        cmd = ["GUEST" if word == guest_ns else word for word in cmd]
        if cmd[:3] == ["ip", "link", "show"]:  # attach_guest polling for the bridge
            continue
        out.append(cmd)
    return out


def test_script_and_lab_run_the_same_commands(monkeypatch):
    lab_cmds, hns, gns = _lab_commands(monkeypatch)
    script = _script_commands("--ns", "guest", "--vnic", "vnic0", "--bridge", "br-overlay0",
                              "--mtu", str(GUEST_MTU), HOST.guest_mac, HOST.guest_ip4, HOST.guest_ip6)
    assert _normalise(script, None, "guest") == _normalise(lab_cmds, hns, gns)


def test_the_guest_has_the_seed_settings(monkeypatch):
    """What both set, by name (so that a change to both at once is still noticed)."""
    script = _normalise(_script_commands(HOST.guest_mac, HOST.guest_ip4, HOST.guest_ip6), None, "guest")
    flat = [" ".join(c) for c in script]
    assert f"ip link add vnic0 mtu {GUEST_MTU} type veth peer name eth0 address {HOST.guest_mac} " \
           f"mtu {GUEST_MTU} netns GUEST" in flat
    assert GUEST_MTU == 1400
    assert "ip -n GUEST link set eth0 addrgenmode none" in flat
    sysctls = next(c for c in script if c[:3] == ["ip", "netns", "exec"] and "sysctl" in c)
    assert "net.ipv6.conf.eth0.accept_dad=0" in sysctls
    assert f"ip -n GUEST addr add {HOST.guest_ip4}/24 dev eth0" in flat
    assert f"ip -n GUEST addr add {HOST.guest_ip6}/64 dev eth0 nodad" in flat
    assert "ip link set vnic0 master br-overlay0" in flat
    # port security: the guest's MAC pinned to its port, which accepts no other source MAC
    assert f"bridge fdb replace {HOST.guest_mac} dev vnic0 master static sticky" in flat
    assert "bridge link set dev vnic0 learning off locked on" in flat
    # addrgenmode none before the link goes up, else the kernel makes an EUI-64 link-local
    assert flat.index("ip -n GUEST link set eth0 addrgenmode none") < flat.index("ip -n GUEST link set eth0 up")


def test_script_without_addresses_and_without_attach(monkeypatch):
    host = HostSpec("h", "192.0.2.1", "de:ad:be:ef:00:09", "", "")
    calls: list[list[str]] = []
    monkeypatch.setattr(topology, "run", lambda *c, **k: calls.append(list(c)) or
                        subprocess.CompletedProcess(list(c), 0, "", ""))
    lab = Lab([host], prefix="vt-docs-")
    lab.add_guest(host, mac=host.guest_mac, ip4=None, ip6=None)
    script = _script_commands("--no-attach", host.guest_mac, "-", "-")
    assert _normalise(script, None, "guest") == _normalise(calls, lab.host_ns(host), lab.guest_ns(host))


def test_vagrant_guests_are_the_generated_hosts_records(tmp_path):
    """provision-host.sh adds the guest of the record whose ip is the host's listen_ip: one per Vagrant host."""
    import tomllib

    from varpd.lab.vagrant import DEFAULT_UNDERLAY, HOSTS, parse_underlay, write_host

    for name in HOSTS:
        write_host(name, parse_underlay(DEFAULT_UNDERLAY), tmp_path / name)
        data = json.loads((tmp_path / name / "hosts.json").read_text())
        cfg = tomllib.loads((tmp_path / name / "varpd.toml").read_text())
        me = cfg["overlays"][0]["properties"]["vxlan/listen_ip"]
        assert len([mac for mac, rec in data.items() if rec["ip"] == me]) == 1, f"{name}: no record with ip {me}"
    text = (ROOT / "scripts" / "provision-host.sh").read_text()
    assert "scripts/add-guest.sh\" --ns guest --vnic vnic0" in text and "--mtu 1400" in text


# -- a real run (root) -------------------------------------------------------------------------

def _ip_json(*args: str):
    return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout)


def _guest_state(gns: str) -> dict:
    link = _ip_json("-n", gns, "-d", "link", "show", "dev", "eth0")[0]
    addrs = _ip_json("-n", gns, "addr", "show", "dev", "eth0")[0]["addr_info"]
    dad = subprocess.run(["ip", "netns", "exec", gns, "cat", "/proc/sys/net/ipv6/conf/eth0/accept_dad"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return {
        "mac": link["address"], "mtu": link["mtu"], "up": "UP" in link["flags"],
        "addrgenmode": link.get("inet6_addr_gen_mode"), "accept_dad": dad,
        "addrs": sorted((a["local"], a["prefixlen"]) for a in addrs),
    }


def _vnic_state(hns: str) -> dict:
    link = _ip_json("-n", hns, "link", "show", "dev", "vnic0")[0]
    v6 = subprocess.run(["ip", "netns", "exec", hns, "cat", "/proc/sys/net/ipv6/conf/vnic0/disable_ipv6"],
                        capture_output=True, text=True, check=True).stdout.strip()
    port = json.loads(subprocess.run(["bridge", "-n", hns, "-j", "-d", "link", "show", "dev", "vnic0"],
                                     capture_output=True, text=True, check=True).stdout)[0]
    pinned = json.loads(subprocess.run(["bridge", "-n", hns, "-j", "fdb", "show", "dev", "vnic0"],
                                       capture_output=True, text=True, check=True).stdout)
    return {"mtu": link["mtu"], "master": link.get("master"), "up": "UP" in link["flags"], "disable_ipv6": v6,
            "learning": port.get("learning"), "locked": port.get("locked"),
            "pinned": sorted(e["mac"] for e in pinned if e.get("state") == "static" and "sticky" in e.get("flags", []))}


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None,
                    reason="needs root, iproute2 and nsenter")
def test_real_run_makes_the_same_guest_as_the_lab():
    prefix = topology.session_prefix("vt-", "docs")
    lab_host = HostSpec("lab", "192.0.2.1", HOST.guest_mac, HOST.guest_ip4, HOST.guest_ip6)
    lab = Lab([lab_host], prefix=prefix)
    script_hns, script_gns = f"{prefix}script", f"{prefix}script-guest"
    try:
        lab._add_ns(lab.host_ns(lab_host))
        topology.run("ip", "-n", lab.host_ns(lab_host), "link", "add", "br-overlay0", "type", "bridge")
        lab.add_guest(lab_host, mac=HOST.guest_mac, ip4=HOST.guest_ip4, ip6=HOST.guest_ip6)
        lab.attach_guest(lab_host, bridge="br-overlay0", timeout=5)

        lab._add_ns(script_hns)
        # nsenter, not `ip netns exec`: the latter's private mount namespace would hide the guest
        # namespace the script mounts under /run/netns (on a Vagrant host it runs in the root namespace)
        enter = ["nsenter", f"--net=/run/netns/{script_hns}"]
        topology.run("ip", "-n", script_hns, "link", "add", "br-overlay0", "type", "bridge")
        res = subprocess.run([*enter, "bash", str(SCRIPT), "--ns", script_gns,
                              "--timeout", "5", HOST.guest_mac, HOST.guest_ip4, HOST.guest_ip6],
                             capture_output=True, text=True, timeout=60)
        lab._made.append(script_gns)
        assert res.returncode == 0, res.stderr

        want = _guest_state(lab.guest_ns(lab_host))
        assert want["mac"] == HOST.guest_mac and want["mtu"] == GUEST_MTU and want["accept_dad"] == "0"
        assert want["addrgenmode"] == "none"
        assert want["addrs"] == sorted([(HOST.guest_ip4, 24), (HOST.guest_ip6, 64)])
        assert _guest_state(script_gns) == want
        assert _vnic_state(script_hns) == _vnic_state(lab.host_ns(lab_host))
        vnic = _vnic_state(script_hns)
        assert vnic["master"] == "br-overlay0"
        assert (vnic["learning"], vnic["locked"], vnic["pinned"]) == (False, True, [HOST.guest_mac])

        # re-running replaces the guest
        res = subprocess.run([*enter, "bash", str(SCRIPT), "--ns", script_gns,
                              "--timeout", "5", HOST.guest_mac, HOST.guest_ip4, HOST.guest_ip6],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert _guest_state(script_gns) == want
    finally:
        lab.down()
        topology.cleanup(prefix)
