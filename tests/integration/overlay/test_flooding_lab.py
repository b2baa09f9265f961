"""Flooding by head-end replication (vxlan/flood = replicate) and VTEPs varpd did not configure (#15 items 1, 2).

One lab of five hosts: host1-3 run varpd with `replicate`, host4 is a flood-and-learn VTEP made
with iproute2 alone (`learning`, an all-zeros entry toward each varpd host; its guest is in no
mapping, so varpd knows its VTEP only from vxlan/flood_peers), host5 a static one (FDB entries
per varpd guest, static neighbours in its guest; its guest is in the mapping). Judged by
third-party programs: avahi discovers a service across hosts, ping and TCP cross both ways with
each peer, and tshark reads on the underlay bridge that a broadcast went once to each remote VTEP
and never back. A second lab (three varpd hosts, `none`) shows avahi finding nothing and no
broadcast ARP or multicast NS leaving a host.
"""
from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time

import pytest

from _avahi import AvahiGuest, require_avahi
from _overlay_helpers import overlay_lab, ping, require, tcp_transfer, terminate, wait_for
from _tshark import tshark_rows

from varpd.lab import Lab, seed_hosts, session_prefix, write_hosts_json, write_varpd_config

SIZE = 1 << 20
STYPE = "_f15test._tcp"
ZERO = "00:00:00:00:00:00"
VARPD, FLOOD_LEARN, STATIC = ("host1", "host2", "host3"), "host4", "host5"


def _iproute2_vtep(lab: Lab, host, *, learning: bool) -> None:
    ns = lab.host_ns(host)
    for cmd in (["link", "add", "br0", "type", "bridge"],
                ["link", "add", "vx23", "type", "vxlan", "id", "23", "local", host.underlay_ip, "dstport", "4789",
                 "learning" if learning else "nolearning"],
                ["link", "set", "vx23", "master", "br0"], ["link", "set", "vx23", "up"], ["link", "set", "br0", "up"]):
        lab.exec(ns, "ip", *cmd)
    lab.attach_guest(host)  # no varpd here: the guest's port made by hand


@pytest.fixture(scope="module")
def flood_lab(tmp_path_factory):
    require("ping", "tcpdump", "tshark")
    workdir = tmp_path_factory.mktemp("flood")
    hosts = seed_hosts(5, dhcp_proxy=False)
    by = {h.name: h for h in hosts}
    lab = Lab(hosts, prefix=session_prefix("vt-", "f15r"))
    try:
        lab.up()
        hosts_json = workdir / "hosts.json"
        write_hosts_json(hosts_json, [h for h in hosts if h.name != FLOOD_LEARN])
        for name in VARPD:
            d = workdir / name
            (d / "state").mkdir(parents=True)
            lab.start_varpd(by[name], write_varpd_config(
                d / "varpd.toml", by[name], hosts_json=hosts_json, state_dir=d / "state", sock=d / "varpd.sock",
                properties={"vxlan/flood": "replicate", "vxlan/flood_peers": by[FLOOD_LEARN].underlay_ip}))
        fl, st = by[FLOOD_LEARN], by[STATIC]
        _iproute2_vtep(lab, fl, learning=True)
        for name in VARPD:
            lab.exec(lab.host_ns(fl), "bridge", "fdb", "append", ZERO, "dev", "vx23", "dst", by[name].underlay_ip)
        _iproute2_vtep(lab, st, learning=False)
        for name in VARPD:
            h = by[name]
            lab.exec(lab.host_ns(st), "bridge", "fdb", "add", h.guest_mac, "dev", "vx23", "dst", h.underlay_ip,
                     "self", "permanent")
            for ip in (h.guest_ip4, h.guest_ip6):
                lab.exec(lab.guest_ns(st), "ip", "neigh", "replace", ip, "lladdr", h.guest_mac, "dev", "eth0",
                         "nud", "permanent")
        for name in VARPD:
            lab.wait_ready(by[name])
            lab.attach_guest(by[name])
        lab.workdir, lab.hosts_json = workdir, hosts_json
        yield lab
    finally:
        lab.down()


def _flood_fdb(lab: Lab, host) -> set[str]:
    out = lab.exec(lab.host_ns(host), "bridge", "-j", "fdb", "show", "dev", "vx23").stdout
    return {e["dst"] for e in json.loads(out or "[]") if e["mac"] == ZERO}


def test_flood_list_is_every_remote_vtep_once_and_the_bridge_answers(flood_lab):
    lab = flood_lab
    h1 = lab.host("host1")
    others = {"192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"}
    wait_for(lambda: _flood_fdb(lab, h1) == others, 10, "host1's flood list")
    status, body = lab.api(h1, "/v1/overlays/vx23")
    assert status == 200 and body["flood"] == [f"{ip}:4789" for ip in sorted(others)], body
    link = json.loads(lab.exec(lab.host_ns(h1), "ip", "-d", "-j", "link", "show", "vx23").stdout)[0]
    assert link["linkinfo"]["info_data"].get("proxy") is not True, link["linkinfo"]
    port = json.loads(lab.exec(lab.host_ns(h1), "bridge", "-d", "-j", "link", "show", "dev", "vx23").stdout)[0]
    assert port["neigh_suppress"] is True
    # the bridge's suppression answers from neighbour entries on the bridge device (the FDB goes first)
    wait_for(lambda: {e["dst"] for e in json.loads(lab.exec(lab.host_ns(h1), "ip", "-j", "neigh", "show", "dev",
                                                             "br0").stdout)}
             >= {"10.55.55.3", "fe80::4", "10.55.55.6", "fe80::7"}, 10, "neighbour entries on host1's br0")
    shown = lab.varpd_cli(h1, "show-overlay", "-t", "-p", "-o", "kind,target,destination,origin", "vx23").stdout
    zero = ZERO.replace(":", "\\:")  # -p escapes the colons inside a field
    assert sorted(line for line in shown.splitlines() if line.startswith(f"fdb:{zero}:")) == [
        f"fdb:{zero}:{ip}\\:4789:flood" for ip in sorted(others)], shown


def test_a_vtep_appearing_in_the_mapping_joins_the_flood_list_and_leaves_it(flood_lab):
    lab = flood_lab
    h1, hosts = lab.host("host1"), [h for h in lab.hosts if h.name != FLOOD_LEARN]
    before = _flood_fdb(lab, h1)
    write_hosts_json(lab.hosts_json, hosts, extra=[("02:15:00:00:00:06", {"ip": "192.0.2.6", "port": 4789,
                                                                          "arp": "10.55.55.60"})])
    wait_for(lambda: _flood_fdb(lab, h1) == before | {"192.0.2.6"}, 10, "192.0.2.6 in host1's flood list")
    write_hosts_json(lab.hosts_json, hosts)
    wait_for(lambda: _flood_fdb(lab, h1) == before, 10, "192.0.2.6 gone from host1's flood list")


def test_entries_deleted_behind_varpds_back_come_back(flood_lab):
    lab = flood_lab
    h1 = lab.host("host1")
    wait_for(lambda: "192.0.2.3" in _flood_fdb(lab, h1), 10, "host1's flood list")
    lab.exec(lab.host_ns(h1), "bridge", "fdb", "del", ZERO, "dev", "vx23", "dst", "192.0.2.3")
    wait_for(lambda: "192.0.2.3" in _flood_fdb(lab, h1), 5, "the deleted flood entry back")
    entry = next(e for e in json.loads(lab.exec(lab.host_ns(h1), "bridge", "-j", "fdb", "show", "dev", "vx23").stdout)
                 if e["mac"] == ZERO and e["dst"] == "192.0.2.3")
    assert "extern_learn" in entry["flags"], entry  # varpd's mark, as on every entry it programs
    # and a neighbour entry on the bridge, where the bridge's suppression reads it
    lab.exec(lab.host_ns(h1), "ip", "neigh", "del", "10.55.55.3", "dev", "br0")
    wait_for(lambda: any(e["dst"] == "10.55.55.3" and "PERMANENT" in e["state"] for e in json.loads(
        lab.exec(lab.host_ns(h1), "ip", "-j", "neigh", "show", "dev", "br0").stdout)), 2, "br0's neighbour back")


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("peer", [FLOOD_LEARN, STATIC])
def test_ping_both_ways_with_a_vtep_varpd_did_not_configure(flood_lab, peer, v6):
    lab = flood_lab
    h, p = lab.host("host1"), lab.host(peer)
    ping(lab, lab.guest_ns(h), p.guest_ip6 if v6 else p.guest_ip4, v6=v6)
    ping(lab, lab.guest_ns(p), h.guest_ip6 if v6 else h.guest_ip4, v6=v6)


@pytest.mark.parametrize("direction", ["to-peer", "from-peer"])
@pytest.mark.parametrize("peer", [FLOOD_LEARN, STATIC])
def test_tcp_transfer_both_ways_with_a_vtep_varpd_did_not_configure(flood_lab, peer, direction):
    lab = flood_lab
    h, p = lab.host("host2"), lab.host(peer)
    src, dst = (h, p) if direction == "to-peer" else (p, h)
    sent, got = tcp_transfer(lab, lab.guest_ns(src), lab.guest_ns(dst), dst.guest_ip4, SIZE)
    assert sent == got and sent.startswith(f"{SIZE} "), (sent, got)


_BROADCAST = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.sendto(b"f15-flood", ("10.55.55.255", int(sys.argv[1])))
m = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
m.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex("eth0"))
m.sendto(b"f15-flood", ("ff02::1", int(sys.argv[1]) + 1, 0, socket.if_nametoindex("eth0")))
"""


def _capture_underlay(lab: Lab, name: str, hosts) -> list[tuple[subprocess.Popen, object]]:
    """tcpdump -w of the VXLAN frames on each of `hosts`' underlay eth0 (in and out)."""
    procs = []
    for h in hosts:
        pcap, err = lab.workdir / f"{name}-{h.name}.pcap", lab.workdir / f"{name}-{h.name}.err"
        with open(err, "w") as e:
            procs.append((lab.popen(lab.host_ns(h), "tcpdump", "-i", "eth0", "-p", "-n", "--immediate-mode", "-U", "-w", str(pcap),
                                    "udp port 4789", stdout=subprocess.DEVNULL, stderr=e), pcap))
        wait_for(lambda: "listening on" in err.read_text(), 10, f"tcpdump on {h.name}'s underlay")
    return procs


def _stop(procs) -> list[list[dict]]:
    """Stop the captures; tshark's rows of the frames each saw."""
    for proc, _ in procs:
        terminate(proc, signal.SIGINT)
    return [list(tshark_rows(pcap).values()) for _, pcap in procs]


def test_each_broadcast_goes_once_to_each_remote_vtep_and_never_back(flood_lab):
    lab = flood_lab
    senders = [lab.host("host1"), lab.host(FLOOD_LEARN)]  # a varpd host and the flood-and-learn peer
    procs = _capture_underlay(lab, "replicated", senders)
    try:
        for i, h in enumerate(senders):
            lab.exec(lab.guest_ns(h), sys.executable, "-c", _BROADCAST, str(9100 + 10 * i))
        time.sleep(0.3)
    finally:
        captured = _stop(procs)
    for sender, rows, marker, remotes in zip(senders, captured, (9100, 9110), ((2, 3, 4, 5), (1, 2, 3))):
        seen: dict[int, list[tuple[str, str]]] = {}
        for r in rows:
            for port in (int(p) for p in r["udp.dstport"][1:]):
                seen.setdefault(port, []).append((r["ip.src"][0], r["ip.dst"][0]))
        # marker: an IPv4 broadcast, marker + 1: an IPv6 all-nodes multicast; the flood-and-learn
        # peer floods to the VTEPs it was given, varpd to every remote VTEP of the overlay
        for port in (marker, marker + 1):
            want = [(sender.underlay_ip, f"192.0.2.{n}") for n in remotes]
            assert sorted(seen.get(port, [])) == want, (sender.name, port, seen)


def test_avahi_finds_a_service_published_on_another_host(flood_lab):
    require_avahi()
    lab = flood_lab
    avahi = {n: AvahiGuest(lab, lab.guest_ns(lab.host(n)), lab.workdir / f"avahi-{n}", f"f15{n}").start()
             for n in VARPD}
    for a in avahi.values():
        a.wait_running()
    avahi["host1"].publish("f15 on host1", STYPE, 5555)
    for n in ("host2", "host3"):
        found = wait_for(lambda: [s for s in avahi[n].browse(STYPE) if s[2] == "IPv4"], 20,
                         f"host1's service from {n}")
        assert {(s[3], s[6], s[7], s[8]) for s in found} == {("f15\\032on\\032host1", "f15host1.local",
                                                              "10.55.55.2", "5555")}, found


_UDHCPC = """#!/bin/sh
[ "$1" = bound ] && echo "LEASE ip=$ip serverid=$serverid"
exit 0
"""


def test_dhcp_reaches_a_server_on_another_host_once_without_relay(flood_lab):
    """The flood carries the client's broadcast to every host: a server guest elsewhere hears it
    itself, with or without the record's dhcp-proxy, and exactly once (varpd relaying it to the
    dhcp-proxy MAC as well would give the server each DISCOVER twice)."""
    require("dnsmasq", "busybox")
    lab = flood_lab
    h1, h2, h3 = (lab.host(n) for n in VARPD)
    hosts = [h for h in lab.hosts if h.name != FLOOD_LEARN]
    write_hosts_json(lab.hosts_json, [dataclasses.replace(h, dhcp_proxy=h1.guest_mac) if h == h2 else h
                                      for h in hosts])
    script = lab.workdir / "udhcpc.sh"
    script.write_text(_UDHCPC)
    script.chmod(0o755)
    d = lab.workdir
    server = lab.popen(
        lab.guest_ns(h1), "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
        "--group=root", f"--pid-file={d / 'dnsmasq.pid'}", f"--dhcp-leasefile={d / 'dnsmasq.leases'}",
        "--dhcp-range=10.55.55.10,10.55.55.20,255.255.255.0", f"--dhcp-host={h2.guest_mac},{h2.guest_ip4}",
        f"--dhcp-host={h3.guest_mac},{h3.guest_ip4}", "--interface=eth0", "--bind-interfaces",
        "--dhcp-authoritative", "--log-dhcp", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(1)  # the mapping change (dhcp-proxy) reaches the daemons' backends
        for client in (h2, h3):  # with the record's dhcp-proxy, and without
            gns = lab.guest_ns(client)
            lab.exec(gns, "ip", "-4", "addr", "flush", "dev", "eth0")
            try:
                res = lab.exec(gns, "busybox", "udhcpc", "-i", "eth0", "-f", "-n", "-q", "-t", "5", "-T", "1",
                               "-s", str(script), check=False, timeout=20)
            finally:
                lab.exec(gns, "ip", "addr", "replace", f"{client.guest_ip4}/24", "dev", "eth0")
            assert f"LEASE ip={client.guest_ip4} serverid={h1.guest_ip4}" in res.stdout, res.stdout + res.stderr
    finally:
        server.terminate()
        log, _ = server.communicate(timeout=5)
        write_hosts_json(lab.hosts_json, hosts)
    for client in (h2, h3):
        assert log.count(f"DHCPDISCOVER(eth0) {client.guest_mac}") == 1, log
        assert log.count(f"DHCPREQUEST(eth0) {client.guest_ip4} {client.guest_mac}") == 1, log


# -- none: nothing broadcast leaves a host ------------------------------------------------------
@pytest.fixture(scope="module")
def none_lab(tmp_path_factory):
    require("ping", "tcpdump", "tshark")
    with overlay_lab(tmp_path_factory.mktemp("noflood"), tag="f15n") as ov:
        ov.lab.workdir = ov.workdir
        yield ov


def test_none_lets_no_broadcast_arp_multicast_ns_or_mdns_leave_a_host(none_lab):
    require_avahi()
    lab = none_lab.lab
    names = [h.name for h in lab.hosts]
    avahi = {n: AvahiGuest(lab, lab.guest_ns(lab.host(n)), lab.workdir / f"avahi-{n}", f"f15{n}").start()
             for n in names}
    procs = _capture_underlay(lab, "none", lab.hosts)
    try:
        for a in avahi.values():
            a.wait_running()
        avahi["host1"].publish("f15 on host1", STYPE, 5555)
        for h in lab.hosts:  # fresh ARP/NS, answered by the proxy from the mapping
            lab.exec(lab.guest_ns(h), "ip", "neigh", "flush", "dev", "eth0")
        ping(lab, lab.guest_ns(lab.host("host2")), "10.55.55.2")
        ping(lab, lab.guest_ns(lab.host("host2")), "fe80::3", v6=True)
        assert avahi["host2"].browse(STYPE) == [] and avahi["host3"].browse(STYPE) == []
    finally:
        rows = [r for per_host in _stop(procs) for r in per_host]
    assert rows, "the pings crossed the underlay"
    inner = [r["eth.dst"][1] for r in rows if len(r["eth.dst"]) > 1]
    leaked = [mac for mac in inner if int(mac.split(":")[0], 16) & 1]
    assert leaked == [], f"broadcast/multicast left a host with vxlan/flood=none: {sorted(set(leaked))}"
