"""DHCPv4 across an overlay with no broadcast: the seed's dhcp-proxy, and varpd's native server.

One push-mode lab: host2's record has "dhcp-proxy": de:ad:be:ef:00:00 (guest1 runs dnsmasq);
host3's daemon has "dhcp/native" = true and answers guest3 (no dhcp-proxy) itself.
"""
from __future__ import annotations

import subprocess

import pytest

from _overlay_helpers import overlay_lab, ping, remote_fdb_ok, require, wait_for

NATIVE = {"dhcp/native": True, "dhcp/subnet": "10.55.55.0/24", "dhcp/router": "10.55.55.1"}

SCRIPT = """#!/bin/sh
[ "$1" = bound ] && echo "LEASE ip=$ip subnet=$subnet router=$router serverid=$serverid"
exit 0
"""


@pytest.fixture(scope="module")
def ov(tmp_path_factory):
    require("busybox")
    with overlay_lab(tmp_path_factory.mktemp("dhcp"), tag="d", mode="push", properties={"host3": NATIVE}) as ov:
        for h in ov.hosts:
            wait_for(lambda: remote_fdb_ok(ov.lab, h, ov.remotes(h)), 5, f"{h.name}: pushed entries")
        script = ov.workdir / "udhcpc.sh"
        script.write_text(SCRIPT)
        script.chmod(0o755)
        ov.udhcpc_script = script
        yield ov


def _lease(ov, host) -> tuple[str, str]:
    """Flush the guest's IPv4 address, run udhcpc once; restore the address afterwards."""
    gns = ov.g(host)
    ov.lab.exec(gns, "ip", "-4", "addr", "flush", "dev", "eth0")
    try:
        res = ov.lab.exec(gns, "busybox", "udhcpc", "-i", "eth0", "-f", "-n", "-q", "-t", "5", "-T", "1",
                          "-s", str(ov.udhcpc_script), check=False, timeout=20)
        return res.stdout, res.stderr
    finally:
        ov.lab.exec(gns, "ip", "addr", "replace", f"{host.guest_ip4}/24", "dev", "eth0")


def test_dhcp_proxy_reaches_the_server_guest(ov):
    require("dnsmasq")
    g1 = ov.g(ov.h1)
    d = ov.workdir
    server = ov.lab.popen(
        g1, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root", "--group=root",
        f"--pid-file={d / 'dnsmasq.pid'}", f"--dhcp-leasefile={d / 'dnsmasq.leases'}",
        "--dhcp-range=10.55.55.10,10.55.55.20,255.255.255.0", "--dhcp-host=de:ad:be:ef:00:01,10.55.55.3",
        "--interface=eth0", "--bind-interfaces", "--dhcp-authoritative", "--log-dhcp",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, err = _lease(ov, ov.h2)
        assert "LEASE ip=10.55.55.3 " in out, f"udhcpc in guest2 got no lease via dhcp-proxy:\n{out}{err}"
    finally:
        server.terminate()
        log, _ = server.communicate(timeout=5)
    assert "DHCPACK(eth0) 10.55.55.3 de:ad:be:ef:00:01" in log, log
    ping(ov.lab, ov.g(ov.h2), ov.h1.guest_ip4)


def test_native_dhcp_answers_with_the_mapping_address(ov):
    out, err = _lease(ov, ov.h3)
    assert f"LEASE ip={ov.h3.guest_ip4} " in out, f"varpd's native DHCP gave guest3 no lease:\n{out}{err}"
    assert "subnet=255.255.255.0" in out and "router=10.55.55.1" in out, out
    ping(ov.lab, ov.g(ov.h3), ov.h1.guest_ip4)
