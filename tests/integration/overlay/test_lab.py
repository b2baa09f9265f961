"""The lab alone, without varpd: hand-made VXLAN devices and static entries prove the topology.

This is the only place where a test programs FDB/neighbour entries itself.
"""
from __future__ import annotations

import pytest

from varpd.lab import Lab, LabError, cleanup, seed_hosts, session_prefix
from varpd.lab.topology import list_namespaces

from _overlay_helpers import LEAK, UnderlayCapture, fdb, neigh, ping, tcp_transfer


def _hand_made_overlay(lab: Lab) -> None:
    for h in lab.hosts:
        ns = lab.host_ns(h)
        lab.exec(ns, "ip", "link", "add", "vx23", "type", "vxlan", "id", "23", "local", h.underlay_ip,
                 "dstport", "4789", "nolearning", "proxy")
        lab.exec(ns, "ip", "link", "add", "br0", "type", "bridge")
        lab.exec(ns, "ip", "link", "set", "vx23", "master", "br0", "up")
        lab.exec(ns, "ip", "link", "set", "br0", "up")
        lab.attach_guest(h, timeout=2)
        for r in lab.hosts:
            if r is h:
                continue
            lab.exec(ns, "bridge", "fdb", "add", r.guest_mac, "dev", "vx23", "dst", r.underlay_ip, "self", "permanent")
            for ip in (r.guest_ip4, r.guest_ip6):
                lab.exec(ns, "ip", "neigh", "add", ip, "lladdr", r.guest_mac, "dev", "vx23", "nud", "permanent")


def test_lab_topology_carries_an_overlay(tmp_path):
    prefix = session_prefix("vt-", "lab")
    lab = Lab(seed_hosts(3), prefix=prefix)
    try:
        lab.up()
        names = set(list_namespaces(prefix))
        assert names == {f"{prefix}underlay"} | {f"{prefix}host{i}{s}" for i in (1, 2, 3) for s in ("", "-guest")}
        g1 = lab.guest_ns(lab.hosts[0])
        # underlay: hosts reach each other's VTEP address
        ping(lab, lab.host_ns(lab.hosts[0]), "192.0.2.3", attempts=2)
        # a guest gets its port once the bridge is there
        with pytest.raises(LabError, match="did not appear"):
            lab.attach_guest(lab.hosts[0], timeout=0.2)

        _hand_made_overlay(lab)
        link = lab.exec(g1, "ip", "-j", "link", "show", "eth0").stdout
        assert '"address":"de:ad:be:ef:00:00"' in link.replace(" ", "")
        assert fdb(lab, lab.hosts[0])["de:ad:be:ef:00:01"]["dst"] == "192.0.2.2"
        assert neigh(lab, lab.hosts[0])["fe80::5"]["lladdr"] == "de:ad:be:ef:00:02"

        cap = UnderlayCapture(lab, tmp_path).start()
        for src in lab.hosts:
            for dst in lab.hosts:
                if src is not dst:
                    ping(lab, lab.guest_ns(src), dst.guest_ip4, attempts=1, count=1, wait=2)
                    ping(lab, lab.guest_ns(src), dst.guest_ip6, v6=True, attempts=1, count=1, wait=2)
        sent, got = tcp_transfer(lab, g1, lab.guest_ns(lab.hosts[1]), "10.55.55.3", 2 * 1024 * 1024)
        assert sent == got and sent.startswith(str(2 * 1024 * 1024))
        captured = cap.stop()
        leaks = [f"{h}: {line}" for h, lines in captured.items() for line in lines if LEAK.search(line)]
        assert not leaks, "guest frames seen bare on the underlay:\n" + "\n".join(leaks)
        # control: the capture works (VTEP ARP, 192.0.2.x, is legitimate underlay traffic)
        assert any("192.0.2." in line for lines in captured.values() for line in lines), captured
    finally:
        lab.down()
    assert list_namespaces(prefix) == []


def test_down_after_partial_up_and_cleanup():
    prefix = session_prefix("vt-", "part")
    hosts = seed_hosts(2)
    # an invalid underlay address makes the second host fail half-way through up()
    hosts[1] = type(hosts[1])(hosts[1].name, "192.0.2.999", hosts[1].guest_mac, hosts[1].guest_ip4, hosts[1].guest_ip6)
    lab = Lab(hosts, prefix=prefix)
    with pytest.raises(LabError):
        lab.up()
    assert list_namespaces(prefix) == []
    lab.down()  # idempotent
    # module-level cleanup removes leftovers by prefix
    lab2 = Lab(seed_hosts(1), prefix=prefix).up()
    assert len(list_namespaces(prefix)) == 3
    assert sorted(cleanup(prefix)) == sorted([f"{prefix}underlay", f"{prefix}host1", f"{prefix}host1-guest"])
    assert list_namespaces(prefix) == []
    lab2.down()
