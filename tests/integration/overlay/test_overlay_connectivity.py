"""Guest-to-guest traffic over varpd-programmed VXLAN, in push and on-demand mode, over an IPv4
and an IPv6 underlay (hosts.json `ip`, vxlan/listen_ip and the FDB in 2001:db8::/64; the guests
still talk IPv4 and IPv6 inside).

One lab per (mode, underlay) (module scope, parametrized); tests run in file order within a lab.
The fixture records the kernel tables before any guest traffic and captures the underlay of
every host for the whole module (checked by the last test).
"""
from __future__ import annotations

import json
import re

import pytest

from _overlay_helpers import (
    LEAK, UnderlayCapture, fdb, is_permanent_fdb, is_permanent_neigh, neigh, overlay_lab, ping, tcp_transfer,
)


# (mode, underlay, extra overlay properties of every host): a flooding variant adds a row here
LABS = {
    "push-ipv4": ("push", "ipv4", {}),
    "on-demand-ipv4": ("on-demand", "ipv4", {}),
    "push-ipv6": ("push", "ipv6", {}),
    "on-demand-ipv6": ("on-demand", "ipv6", {}),
    "replicate-ipv6": ("push", "ipv6", {"vxlan/flood": "replicate"}),  # flooding over an IPv6 underlay
}


@pytest.fixture(scope="module", params=list(LABS))
def ov(request, tmp_path_factory):
    mode, underlay, props = LABS[request.param]
    workdir = tmp_path_factory.mktemp(f"conn-{request.param}")
    tag = f"c{request.param[0]}{underlay[-1]}"  # push, on-demand, replicate: p, o, r
    # on-demand: let one reconcile pass (1 s) run before the "no entries yet" snapshot
    with overlay_lab(workdir, tag=tag, mode=mode, settle=1.5 if mode == "on-demand" else 0, underlay=underlay,
                     properties={h: props for h in ("host1", "host2", "host3")}) as ov:
        if mode == "push":  # push is done by the daemon, without traffic; give it its reconcile period
            ov.wait_pushed()
            ov.initial_fdb = {h.name: fdb(ov.lab, h) for h in ov.hosts}
            ov.initial_neigh = {h.name: neigh(ov.lab, h, ov.neigh_dev) for h in ov.hosts}
        ov.capture = UnderlayCapture(ov.lab, workdir).start()
        yield ov


def test_status_reports_the_overlay(ov):
    res = ov.lab.varpd_cli(ov.h1, "show-overlay", "-f", "-p", "-o", "link,status,mode,plugin", "vx23")
    assert res.returncode == 0, res.stderr
    fields = res.stdout.strip().split(":")
    assert len(fields) == 4 and fields[0] == "vx23" and fields[2] == ov.mode and fields[3] == "files", res.stdout
    status, body = ov.lab.api(ov.h1, "/v1/overlays/vx23")
    assert status == 200, body
    assert (body["name"], body["vni"], body["mode"], body["plugin"]) == ("vx23", 23, ov.mode, "files")
    status, body = ov.lab.api(ov.h1, "/v1/overlays")
    assert status == 200 and [o["name"] for o in body] == ["vx23"], body


def test_vxlan_mtu_is_the_underlays_less_the_encapsulation(ov):
    """No link/mtu, no vxlan/underlay_dev: eth0 (1500) holds the listen IP; VXLAN over IPv4 adds 50 bytes,
    over IPv6 70 (the kernel gave 1500 before, more than the underlay carries)."""
    want = 1430 if ":" in ov.h1.underlay_ip else 1450
    for h in ov.hosts:
        out = ov.lab.exec(ov.lab.host_ns(h), "ip", "-j", "link", "show", "dev", "vx23").stdout
        assert json.loads(out)[0]["mtu"] == want, (h.name, out)


def test_initial_tables_before_traffic(ov):
    """Push: every remote MAC/IP is programmed before traffic, local ones never. On-demand: nothing yet."""
    for h in ov.hosts:
        f, n = ov.initial_fdb[h.name], ov.initial_neigh[h.name]
        assert h.guest_mac not in f and h.guest_ip4 not in n and h.guest_ip6 not in n, (h.name, f, n)
        if ov.mode == "on-demand":
            assert not any(r.guest_mac in f for r in ov.remotes(h)), (h.name, f)
            assert not any(ip in n for r in ov.remotes(h) for ip in (r.guest_ip4, r.guest_ip6)), (h.name, n)
            continue
        for r in ov.remotes(h):
            assert f[r.guest_mac]["dst"] == r.underlay_ip and is_permanent_fdb(f[r.guest_mac]), (h.name, f)
            for ip in (r.guest_ip4, r.guest_ip6):
                assert n[ip]["lladdr"] == r.guest_mac and is_permanent_neigh(n[ip]), (h.name, n)


def test_first_ping_succeeds(ov):
    """Push: entries exist before traffic. On-demand: the ARP that caused the miss is answered
    by injection from the mapping and the FDB entry is programmed before the reply, so the
    first packet is not lost either (illumos varpd, and plain miss handling, drop it)."""
    res = ov.lab.exec(ov.g(ov.h1), "ping", "-n", "-c1", "-W2", ov.h2.guest_ip4, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6-link-local"])
def test_every_guest_reaches_every_other(ov, v6):
    for src in ov.hosts:
        for dst in ov.remotes(src):
            ping(ov.lab, ov.g(src), dst.guest_ip6 if v6 else dst.guest_ip4, v6=v6)
    # whatever the mode, traffic leaves the tables programmed (on demand: installed by the misses)
    for h in ov.hosts:
        f, n = fdb(ov.lab, h), neigh(ov.lab, h, ov.neigh_dev)
        for r in ov.remotes(h):
            assert f.get(r.guest_mac, {}).get("dst") == r.underlay_ip, (h.name, f)
            ip = r.guest_ip6 if v6 else r.guest_ip4
            assert n.get(ip, {}).get("lladdr") == r.guest_mac, (h.name, n)


def test_tcp_10mib_crosses_intact(ov):
    ping(ov.lab, ov.g(ov.h1), ov.h2.guest_ip4)  # on-demand: resolve first
    size = 10 * 1024 * 1024
    sent, got = tcp_transfer(ov.lab, ov.g(ov.h1), ov.g(ov.h2), ov.h2.guest_ip4, size)
    assert sent.split()[0] == str(size)
    assert got == sent


def test_no_guest_frame_left_a_host_bare(ov):
    """ARP/NS of guests is answered by the VXLAN proxy: nothing of the guest layer appears
    on the underlay outside UDP 4789 (VTEP ARP for 192.0.2.x is legitimate)."""
    for src in ov.hosts:  # make sure this test has traffic of its own to look at
        for dst in ov.remotes(src):
            ping(ov.lab, ov.g(src), dst.guest_ip4, count=1)
    captured = ov.capture.stop()
    leaks = [f"{h}: {line}" for h, lines in captured.items() for line in lines if LEAK.search(line)]
    assert not leaks, "guest-layer frames seen bare on the underlay:\n" + "\n".join(leaks)
    underlay_net = "2001:db8::" if ":" in ov.h1.underlay_ip else "192.0.2."  # the VTEPs' own ARP or NDP
    assert any(underlay_net in line for lines in captured.values() for line in lines), \
        f"capture saw no underlay ARP/NDP at all, is it working? {captured}"


def test_metrics_count_what_the_daemon_did(ov):
    ping(ov.lab, ov.g(ov.h1), ov.h2.guest_ip4)  # on demand, entries exist only after traffic
    status, text = ov.lab.api(ov.h1, "/metrics")
    assert status == 200 and isinstance(text, str), text
    programmed = [line for line in text.splitlines()
                  if line.startswith("varpd_entries_programmed_total{") and 'table="fdb"' in line]
    assert programmed and float(programmed[0].rsplit(" ", 1)[1]) >= 2, programmed
    assert 'varpd_overlay_online{mode="%s",overlay="vx23",plugin="files"} 1.0' % ov.mode in text


def test_multicast_reaches_remote_guests_only_when_flooding(ov):
    """A ping to all-nodes (ff02::1) is answered by the guests of the other hosts with
    vxlan/flood=replicate (one copy per remote VTEP, over either underlay), and by none without."""
    out = ov.lab.exec(ov.g(ov.h1), "ping", "-6", "-n", "-c", "3", "-i", "0.3", "-w", "4", "ff02::1%eth0",
                      check=False, timeout=15).stdout
    answered = set(re.findall(r"from (fe80::[0-9a-f:]+)", out))
    remote = {r.guest_ip6 for r in ov.remotes(ov.h1)}
    if ov.neigh_dev == "br0":  # flooding
        assert remote <= answered, out
    else:
        assert not remote & answered, out
