"""One daemon, overlays in two other network namespaces (#15 items 3, 5, 6).

Namespaces A and B are two "hosts" joined by an underlay veth (198.51.100.1 ↔ .2, MTU 1400), each
with a guest behind its overlay's bridge; one varpd, running in a third namespace, serves overlay
n15a in A and n15b in B, both on demand (so both namespaces' miss listeners must answer). The
reconcile interval is 30 s: whatever the tests see within a few seconds came from kernel events
or the once-a-second namespace check, not from a reconcile pass. A third overlay, n15c, is
configured in namespace C, which does not exist when the daemon starts.
"""
from __future__ import annotations

import json

import pytest

from varpd.lab import HostSpec, Lab, http_request, session_prefix, write_hosts_json
from varpd.lab.topology import LabError, run

from _overlay_helpers import ping, wait_for

GUESTS = {"a": ("de:ad:be:ef:15:01", "198.51.100.1", "10.15.0.1", "fe80::1501"),
          "b": ("de:ad:be:ef:15:02", "198.51.100.2", "10.15.0.2", "fe80::1502")}


class Tenants:
    """Namespaces A and B (`ns["a"]`, `ns["b"]`), their guests, the daemon's lab, all torn down."""

    def __init__(self, tmp_path) -> None:
        self.lab = Lab([HostSpec("host1", "192.0.2.1", "de:ad:be:ef:15:00", "10.15.0.9", "fe80::1509")],
                       prefix=session_prefix("vt-", "n15ns"))
        self.ns = {k: f"{self.lab.prefix}{k}" for k in (*GUESTS, "c")}
        self.guest = {k: f"{self.lab.prefix}g{k}" for k in GUESTS}
        self.tmp = tmp_path
        self.hosts_json = tmp_path / "hosts.json"
        self.sock = tmp_path / "varpd.sock"

    def make_tenant(self, k: str) -> None:
        """Namespace `k` (again): lo up; the underlay link to the other one is made by make_underlay."""
        run("ip", "netns", "add", self.ns[k])
        run("ip", "-n", self.ns[k], "link", "set", "lo", "up")

    def make_underlay(self, address: bool = True) -> None:
        a, b = self.ns["a"], self.ns["b"]
        run("ip", "-n", a, "link", "add", "ul0", "mtu", "1400", "type", "veth", "peer", "name", "ul0", "mtu", "1400",
            "netns", b)
        for k, ns in (("a", a), ("b", b)):
            run("ip", "-n", ns, "link", "set", "ul0", "up")
            if address:
                run("ip", "-n", ns, "addr", "add", f"{GUESTS[k][1]}/24", "dev", "ul0")

    def make_guest(self, k: str) -> None:
        """The guest namespace (made once) and its veth into tenant `k`, port vnic0 there."""
        mac, _, ip4, ip6 = GUESTS[k]
        g = self.guest[k]
        if g not in run("ip", "netns", "list").stdout:
            run("ip", "netns", "add", g)
        run("ip", "-n", self.ns[k], "link", "add", "vnic0", "mtu", "1300", "type", "veth",
            "peer", "name", "eth0", "address", mac, "mtu", "1300", "netns", g)
        run("ip", "netns", "exec", g, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
        run("ip", "-n", g, "link", "set", "eth0", "addrgenmode", "none")
        run("ip", "-n", g, "addr", "add", f"{ip4}/24", "dev", "eth0")
        run("ip", "-n", g, "link", "set", "eth0", "up")
        run("ip", "-n", g, "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
        run("ip", "-n", self.ns[k], "link", "set", "vnic0", "up")

    def attach(self, k: str) -> None:
        """Once varpd made bridge n15br<k> in tenant `k`, put the guest's port on it."""
        ns = self.ns[k]
        wait_for(lambda: run("ip", "-n", ns, "link", "show", f"n15br{k}", check=False).returncode == 0, 10,
                 f"bridge n15br{k} in {ns}")
        run("ip", "-n", ns, "link", "set", "vnic0", "master", f"n15br{k}")

    def config(self) -> None:
        write_hosts_json(self.hosts_json, [], [(mac, {"ip": ul, "port": 4789, "arp": ip4, "ndp": ip6})
                                               for mac, ul, ip4, ip6 in GUESTS.values()])
        overlays = "".join(f'''
[[overlays]]
name = "n15{k}"
vni = 15
search = "files"
mode = "on-demand"
bridge = "n15br{k}"
netns = "{self.ns[k]}"
[overlays.properties]
"vxlan/listen_ip" = "{GUESTS[k][1]}"
"files/config" = "{self.hosts_json}"
''' for k in GUESTS) + f'''
[[overlays]]
name = "n15c"
vni = 15
search = "files"
netns = "{self.ns['c']}"
[overlays.properties]
"vxlan/listen_ip" = "198.51.100.3"
"files/config" = "{self.hosts_json}"
'''
        (self.tmp / "state").mkdir(exist_ok=True)
        self.conf = self.tmp / "varpd.toml"
        self.conf.write_text(f'''[daemon]
state_dir = "{self.tmp / 'state'}"
socket = "{self.sock}"
reconcile_interval = 30.0
log_level = "debug"
{overlays}''')

    def down(self) -> None:
        self.lab.down()
        for ns in [*self.ns.values(), *self.guest.values()]:
            run("ip", "netns", "del", ns, check=False)

    # the daemon ---------------------------------------------------------------------------
    @property
    def host(self) -> HostSpec:
        return self.lab.hosts[0]

    def status(self, name: str) -> tuple[str, str]:
        _, body = self.lab.api(self.host, f"/v1/overlays/{name}")
        return body["status"], body["details"]

    def cli(self, *args: str):
        return self.lab.varpd_cli(self.host, *args)

    def link(self, k: str, name: str) -> dict | None:
        res = run("ip", "-n", self.ns[k], "-j", "-d", "link", "show", "dev", name, check=False)
        return json.loads(res.stdout)[0] if res.returncode == 0 else None


@pytest.fixture(scope="module")
def t(tmp_path_factory):
    t = Tenants(tmp_path_factory.mktemp("netns"))
    try:
        t.lab.up()
        for k in GUESTS:
            t.make_tenant(k)
        t.make_underlay()
        for k in GUESTS:
            t.make_guest(k)
        t.config()
        t.lab.start_varpd(t.host, t.conf)
        t.lab.wait_ready(t.host)
        for k in GUESTS:
            t.attach(k)
        yield t
    finally:
        t.down()


def test_one_daemon_serves_overlays_in_two_namespaces(t):
    for k in GUESTS:
        assert t.status(f"n15{k}") == ("ONLINE", ""), t.lab.log_tail(t.host)
        assert t.link(k, f"n15{k}")["linkinfo"]["info_kind"] == "vxlan"
        assert t.link(k, f"n15{k}")["master"] == f"n15br{k}"
    # on demand: the first packets are misses in A and in B, answered through each namespace's own socket
    ping(t.lab, t.guest["a"], GUESTS["b"][2])
    ping(t.lab, t.guest["b"], GUESTS["a"][3], v6=True)
    res = t.cli("show-overlay", "-f", "-p", "-o", "link,status,netns")
    assert res.stdout.splitlines()[:2] == [f"n15a:ONLINE:{t.ns['a']}", f"n15b:ONLINE:{t.ns['b']}"], res


def test_an_overlay_whose_namespace_comes_later(t):
    """Configured in namespace C before C exists: DEGRADED and retried; ONLINE within seconds of C
    (with its listen address) appearing, not at the next 30 s retry."""
    status, details = t.status("n15c")
    assert status == "DEGRADED" and f"network namespace {t.ns['c']!r} does not exist" in details, details
    c = t.ns["c"]
    t.make_tenant("c")
    run("ip", "-n", c, "link", "add", "ul0", "type", "veth", "peer", "name", "ul1")
    run("ip", "-n", c, "addr", "add", "198.51.100.3/24", "dev", "ul0")
    run("ip", "-n", c, "link", "set", "ul0", "up")
    wait_for(lambda: t.status("n15c") == ("ONLINE", ""), 5, "n15c ONLINE once its namespace exists")
    assert t.link("c", "n15c")["mtu"] == 1450


def test_the_vxlan_mtu_follows_the_interface_holding_the_listen_ip(t):
    """No vxlan/underlay_dev: ul0 (1400) holds the listen IP, so the device is 1400 - 50, not 1500."""
    assert [t.link(k, f"n15{k}")["mtu"] for k in GUESTS] == [1350, 1350]


def test_a_namespace_deleted_and_made_again(t):
    gone = t.ns["b"]
    run("ip", "netns", "del", gone)
    wait_for(lambda: t.status("n15b")[0] == "DEGRADED", 5, "n15b DEGRADED")
    assert f"network namespace {gone} does not exist" in t.status("n15b")[1]
    # it is really gone (varpd let go of its sockets there), and the veths with it: the guest's, and
    # the underlay link, so A lost its listen address
    wait_for(lambda: run("ip", "-n", t.guest["b"], "link", "show", "eth0", check=False).returncode != 0, 5,
             "the old namespace B to be destroyed")
    wait_for(lambda: "198.51.100.1 is not an address" in t.status("n15a")[1], 2, "n15a DEGRADED")
    t.make_tenant("b")
    t.make_underlay()
    t.make_guest("b")
    t.attach("b")
    for k in GUESTS:
        wait_for(lambda: t.status(f"n15{k}") == ("ONLINE", ""), 5, f"n15{k} ONLINE again")
    ping(t.lab, t.guest["a"], GUESTS["b"][2])
    ping(t.lab, t.guest["b"], GUESTS["a"][2])


def test_create_overlay_refuses_a_missing_namespace_or_listen_ip(t):
    props = f"vxlan/listen_ip=198.51.100.1,files/config={t.hosts_json}"
    res = t.cli("create-overlay", "-v", "16", "-s", "files", "-p", props, "--netns", "n15-no-such-ns", "n15x")
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res
    assert "network namespace 'n15-no-such-ns' does not exist" in res.stderr, res
    status, body = http_request(t.sock, "POST", "/v1/overlays", {
        "name": "n15x", "vni": 16, "search": "files", "netns": t.ns["a"],
        "properties": {"vxlan/listen_ip": "198.51.100.9", "files/config": str(t.hosts_json)}})
    assert status == 400 and body["error"].startswith(
        f"vxlan/listen_ip 198.51.100.9 is not an address of any interface in network namespace {t.ns['a']}"), body
    assert t.link("a", "n15x") is None and http_request(t.sock, "GET", "/v1/overlays/n15x")[0] == 404


def test_a_listen_ip_that_goes_and_comes_back(t):
    """Address events (RTM_DELADDR/NEWADDR on the namespace's socket) decide, within a second."""
    a = t.ns["a"]
    run("ip", "-n", a, "addr", "del", "198.51.100.1/24", "dev", "ul0")
    wait_for(lambda: t.status("n15a")[0] == "DEGRADED", 2, "n15a DEGRADED without its listen IP")
    assert t.status("n15a")[1] == f"vxlan/listen_ip 198.51.100.1 is not an address of any interface in " \
                                  f"network namespace {a}"
    run("ip", "-n", a, "link", "set", "ul0", "mtu", "1300")
    run("ip", "-n", a, "addr", "add", "198.51.100.1/24", "dev", "ul0")
    wait_for(lambda: t.status("n15a") == ("ONLINE", ""), 2, "n15a ONLINE with its listen IP back")
    assert t.link("a", "n15a")["mtu"] == 1250  # and the MTU follows the underlay it found again
    ping(t.lab, t.guest["a"], GUESTS["b"][2])


def test_delete_overlay_cleans_up_in_its_namespace(t):
    res = t.cli("delete-overlay", "--force-bridge", "n15a")
    assert res.returncode == 0, res
    assert t.link("a", "n15a") is None and t.link("a", "n15bra") is None
    assert t.status("n15b")[0] == "ONLINE"
    with pytest.raises(LabError):
        run("ip", "-n", t.ns["a"], "link", "show", "n15bra")
