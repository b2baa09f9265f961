"""Interop with a VTEP varpd does not run: host3 is configured by hand with iproute2 alone (a plain
`ip link add type vxlan … nolearning`, `bridge fdb add` per remote guest, static `ip neigh` in its
guest, its guest behind its own bridge), as a static peer would be. host1 and host2 run varpd with
the seed's hosts.json, host3's guest in it. Ping (IPv4, IPv6 link-local) and a TCP transfer go both
ways between the hand-made VTEP's guest and each varpd guest (issue #11, "How it is proven").

The peer's guest gets static neighbour entries: with `proxy` on varpd's devices the kernel swallows
a varpd guest's outgoing ARP reply (kernel-notes), and a static peer floods nothing to resolve with.
"""
from __future__ import annotations

import pytest

from _overlay_helpers import ping, require, tcp_transfer

from varpd.lab import Lab, seed_hosts, session_prefix, write_hosts_json, write_varpd_config

SIZE = 1 << 20


@pytest.fixture(scope="module")
def interop(tmp_path_factory):
    require("ping")
    workdir = tmp_path_factory.mktemp("interop")
    hosts = seed_hosts(3)
    lab = Lab(hosts, prefix=session_prefix("vt-", "ip2"))
    try:
        lab.up()
        varpd_hosts, peer = hosts[:2], hosts[2]
        hosts_json = workdir / "hosts.json"
        write_hosts_json(hosts_json, hosts)
        for h in varpd_hosts:
            d = workdir / h.name
            (d / "state").mkdir(parents=True)
            lab.start_varpd(h, write_varpd_config(d / "varpd.toml", h, hosts_json=hosts_json, state_dir=d / "state",
                                                  sock=d / "varpd.sock"))
        # the hand-made VTEP: iproute2 only, no varpd in this namespace
        pns = lab.host_ns(peer)
        for cmd in (["link", "add", "br0", "type", "bridge"],
                    ["link", "add", "vx23", "type", "vxlan", "id", "23", "local", peer.underlay_ip,
                     "dstport", "4789", "nolearning"],
                    ["link", "set", "vx23", "master", "br0"],
                    ["link", "set", "vx23", "up"], ["link", "set", "br0", "up"]):
            lab.exec(pns, "ip", *cmd)
        lab.attach_guest(peer)  # no varpd here: the guest's port made by hand
        pguest = lab.guest_ns(peer)
        for h in varpd_hosts:
            lab.exec(pns, "bridge", "fdb", "add", h.guest_mac, "dev", "vx23", "dst", h.underlay_ip, "self", "permanent")
            for ip in (h.guest_ip4, h.guest_ip6):
                lab.exec(pguest, "ip", "neigh", "replace", ip, "lladdr", h.guest_mac, "dev", "eth0", "nud", "permanent")
        for h in varpd_hosts:
            lab.wait_ready(h)
            lab.attach_guest(h)
        yield lab
    finally:
        lab.down()


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("varpd_host", ["host1", "host2"])
def test_ping_both_ways_with_a_hand_made_vtep(interop, varpd_host, v6):
    lab = interop
    h, peer = lab.host(varpd_host), lab.host("host3")
    ping(lab, lab.guest_ns(h), peer.guest_ip6 if v6 else peer.guest_ip4, v6=v6)
    ping(lab, lab.guest_ns(peer), h.guest_ip6 if v6 else h.guest_ip4, v6=v6)


@pytest.mark.parametrize("direction", ["to-peer", "from-peer"])
def test_tcp_transfer_both_ways_with_a_hand_made_vtep(interop, direction):
    lab = interop
    h, peer = lab.host("host1"), lab.host("host3")
    src, dst = (h, peer) if direction == "to-peer" else (peer, h)
    sent, got = tcp_transfer(lab, lab.guest_ns(src), lab.guest_ns(dst), dst.guest_ip4, SIZE)
    assert sent == got and sent.startswith(f"{SIZE} "), (sent, got)
