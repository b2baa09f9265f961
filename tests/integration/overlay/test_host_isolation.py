"""Nothing of the host reaches the tenant's L2 through the devices varpd creates (issue #11, 6).

One host runs a real varpd with two overlays (VNI 23 on br0, VNI 24 on br24), a guest on each.
tcpdump runs in both guests from before the daemon starts (so device creation is inside the
window) until after the guests have tried every way in: IPv6 all-nodes and link-local ping, a TCP
connection to a host listener on `::` (dual-stack), IPv4 ping, ARP and TCP to the host's address.
The judges are ping, tcpdump and the host listener: no frame with a host device's MAC as source,
no reply, no accepted connection.
"""
from __future__ import annotations

import ipaddress
import json
import signal
import sys
import time

from _overlay_helpers import UnderlayCapture, require

from varpd.lab import HostSpec, Lab, seed_hosts, session_prefix, write_hosts_json, write_varpd_config

G24 = HostSpec("host1", "192.0.2.1", "de:ad:be:ef:24:00", "10.66.66.2", "fe80::66")
PORT = 7777

_LISTENER = r"""
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("::", int(sys.argv[1]))); s.listen(8)
print("listening", flush=True)
while True:
    c, peer = s.accept(); print("accepted", peer, flush=True); c.close()
"""

_CONNECT = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close(); print("connected")
except OSError as exc:
    print("refused-or-timeout", exc)
"""


def _eui64(mac: str) -> str:
    b = bytearray(bytes.fromhex(mac.replace(":", "")))
    b[0] ^= 2
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])))


def _host_macs(lab: Lab, ns: str) -> dict[str, str]:
    links = json.loads(lab.exec(ns, "ip", "-j", "link", "show").stdout)
    return {link["address"]: link["ifname"] for link in links if link.get("address") not in (None, "00:00:00:00:00:00")}


def _host_ipv6(lab: Lab, ns: str, dev: str) -> list[str]:
    info = json.loads(lab.exec(ns, "ip", "-j", "-6", "addr", "show", "dev", dev, check=False).stdout or "[]")
    return [a["local"] for i in info for a in i.get("addr_info", [])]


def test_guests_see_and_reach_nothing_of_the_host(tmp_path):
    require("tcpdump", "ping")
    hosts = seed_hosts(2)
    h1 = hosts[0]
    lab = Lab(hosts, prefix=session_prefix("vt-", "iso"))
    capture = None
    try:
        lab.up()
        g23 = lab.guest_ns(h1)
        g24 = lab.add_guest(h1, mac=G24.guest_mac, ip4=G24.guest_ip4, ip6=G24.guest_ip6, vnic="vnic1", tag="g24")
        hns = lab.host_ns(h1)
        listener = lab.popen(hns, sys.executable, "-u", "-c", _LISTENER, str(PORT))
        assert listener.stdout.readline().strip() == "listening"

        (tmp_path / "state").mkdir()
        write_hosts_json(tmp_path / "hosts23.json", hosts)
        write_hosts_json(tmp_path / "hosts24.json", [G24])
        cfg = write_varpd_config(tmp_path / "varpd.toml", h1, hosts_json=tmp_path / "hosts23.json",
                                 state_dir=tmp_path / "state", sock=tmp_path / "varpd.sock")
        with open(cfg, "a") as f:
            f.write('\n[[overlays]]\nname = "vx24"\nvni = 24\nsearch = "files"\nmode = "push"\nbridge = "br24"\n'
                    f'[overlays.properties]\n"vxlan/listen_ip" = "{h1.underlay_ip}"\n"vxlan/listen_port" = 4789\n'
                    f'"files/config" = "{tmp_path / "hosts24.json"}"\n')
        lab.start_varpd(h1, cfg)
        lab.wait_ready(h1)
        lab.attach_guest(h1)  # varpd create-vnic: the guests' eth0 exist from here
        lab.attach_guest(h1, vnic="vnic1", bridge="br24")
        capture = UnderlayCapture(lab, tmp_path, namespaces={g23: g23, g24: g24}, bpf="",
                                  promiscuous=True).start()
        time.sleep(3)  # DAD, router solicitation and MLD of a device with a link-local come within this

        macs = _host_macs(lab, hns)
        targets6 = {_eui64(mac) for mac, dev in macs.items() if dev in ("br0", "br24", "vx23", "vx24")}
        for dev in ("br0", "br24", "vx23", "vx24"):
            targets6.update(a for a in _host_ipv6(lab, hns, dev) if a.startswith("fe80:"))
        for gns, own in ((g23, h1.guest_ip6), (g24, G24.guest_ip6)):
            lab.exec(gns, "ip", "route", "add", "192.0.2.0/24", "dev", "eth0")
            res = lab.exec(gns, "ping", "-6", "-n", "-c", "2", "-i", "0.3", "-W", "1", "ff02::1%eth0", check=False)
            others = [line for line in res.stdout.splitlines() if "bytes from" in line and f"from {own}%" not in line]
            assert not others, (gns, "the host answered all-nodes", others)
            for target in sorted(targets6):
                res = lab.exec(gns, "ping", "-6", "-n", "-c", "1", "-W", "1", f"{target}%eth0", check=False)
                assert res.returncode != 0, (gns, target, res.stdout)
                res = lab.exec(gns, sys.executable, "-c", _CONNECT, f"{target}%eth0", str(PORT), check=False)
                assert "connected" not in res.stdout.split(), (gns, target, res.stdout)
            res = lab.exec(gns, "ping", "-n", "-c", "2", "-i", "0.3", "-W", "1", h1.underlay_ip, check=False)
            assert res.returncode != 0, (gns, res.stdout)
            res = lab.exec(gns, sys.executable, "-c", _CONNECT, h1.underlay_ip, str(PORT), check=False)
            assert "connected" not in res.stdout.split(), (gns, res.stdout)
            neigh = lab.exec(gns, "ip", "-j", "neigh", "show", h1.underlay_ip).stdout
            assert all("lladdr" not in e for e in json.loads(neigh or "[]")), (gns, "ARP answered", neigh)
        listener.send_signal(signal.SIGKILL)
        accepted = listener.communicate(timeout=5)[0]
        assert "accepted" not in accepted, accepted
    finally:
        lines = capture.stop() if capture is not None else {}
        macs = _host_macs(lab, lab.host_ns(h1)) if lab.daemons else {}
        lab.down()
    assert any(G24.guest_mac in line for line in lines[g24]), "the capture in the VNI 24 guest saw nothing at all"
    for gns, captured in lines.items():
        from_host = [line for line in captured if len(line.split()) > 1 and line.split()[1] in macs]
        assert not from_host, (gns, [(macs[line.split()[1]], line) for line in from_host])
