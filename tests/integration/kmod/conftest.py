"""Fixtures for the kmod-shim integration tests: throw-away ``vk-`` namespaces."""
from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass
from ipaddress import IPv4Address

import pytest

from varpd_kmod import DeviceSpec, ensure_overlay

from _kmod_helpers import link_json, sh


@pytest.fixture
def make_netns():
    """Factory creating uniquely named ``vk-`` namespaces, all deleted at teardown."""
    created: list[str] = []

    def make(tag: str) -> str:
        name = f"vk-{tag}-{uuid.uuid4().hex[:6]}"
        sh("ip", "netns", "add", name)
        created.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    try:
        yield make
    finally:
        for name in reversed(created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@dataclass
class Topo:
    host: str  # holds vx0 + br0 + ul0
    guest: str  # gv0 on br0 (via hv0)
    remote: str  # ul1 192.0.2.2 (underlay peer)
    handle: object
    guest_mac: str
    vx: str = "vx0"
    br: str = "br0"
    guest_ip: IPv4Address = IPv4Address("10.23.0.1")


@pytest.fixture
async def topo(make_netns) -> Topo:
    host, guest, remote = make_netns("h"), make_netns("g"), make_netns("r")
    # underlay: ul0 (host, 192.0.2.1) <-> ul1 (remote, 192.0.2.2)
    sh("ip", "-n", host, "link", "add", "ul0", "type", "veth", "peer", "name", "ul1", "netns", remote)
    sh("ip", "-n", host, "addr", "add", "192.0.2.1/24", "dev", "ul0")
    sh("ip", "-n", host, "link", "set", "ul0", "up")
    sh("ip", "-n", remote, "addr", "add", "192.0.2.2/24", "dev", "ul1")
    sh("ip", "-n", remote, "link", "set", "ul1", "up")
    handle = await ensure_overlay(
        DeviceSpec("vx0", 42, IPv4Address("192.0.2.1"), bridge="br0", underlay_dev="ul0"), netns=host
    )
    # guest: no DAD, so IPv6 link-local traffic can start right away
    for key in ("all", "default"):
        sh("sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0", ns=guest)
    sh("ip", "-n", host, "link", "add", "hv0", "type", "veth", "peer", "name", "gv0", "netns", guest)
    sh("ip", "-n", host, "link", "set", "hv0", "master", "br0")
    sh("ip", "-n", host, "link", "set", "hv0", "up")
    sh("ip", "-n", guest, "addr", "add", "10.23.0.1/24", "dev", "gv0")
    sh("ip", "-n", guest, "addr", "add", "fe80::1/64", "dev", "gv0", "nodad")
    sh("ip", "-n", guest, "link", "set", "gv0", "up")
    guest_mac = link_json("gv0", guest)["address"]
    return Topo(host=host, guest=guest, remote=remote, handle=handle, guest_mac=guest_mac)


@pytest.fixture
def python() -> str:
    return sys.executable
