"""The 3-host overlay with the etcd backend: etcd runs in the lab's underlay namespace on 192.0.2.254
(an address on the underlay bridge), so every host's daemon reaches it over the underlay.

One lab for the module; the tests run in order and each leaves the mapping as the seed's.
"""
from __future__ import annotations

import signal
import time

import pytest

from varpd.lab import HostSpec, Lab, seed_hosts, session_prefix, write_varpd_config
from varpd.lab.topology import run, varpd_bin

from _overlay_helpers import fdb, neigh, ping, remote_fdb_ok, remote_neigh_ok, wait_all_pushed, wait_for
from etcd_fixture import EtcdServer, require_etcd

pytest.importorskip("aetcd")
from varpd_plugins.etcd_keys import key_for  # noqa: E402

ETCD_IP = "192.0.2.254"
VNI = 23


class EtcdLab:
    def __init__(self, lab: Lab, etcd: EtcdServer, workdir):
        self.lab, self.etcd, self.workdir = lab, etcd, workdir
        self.hosts = lab.hosts
        self.h1, self.h2, self.h3 = self.hosts
        self.configs = {}

    def remotes(self, host: HostSpec) -> list[HostSpec]:
        return [h for h in self.hosts if h.underlay_ip != host.underlay_ip]

    def register(self, host: HostSpec, spec: HostSpec, *extra: str, popen: bool = False):
        vnic = f"{spec.guest_mac},arp={spec.guest_ip4},ndp={spec.guest_ip6}"
        if spec.dhcp_proxy:
            vnic += f",dhcp-proxy={spec.dhcp_proxy}"
        cmd = [varpd_bin(), "register", "--endpoints", self.etcd.endpoint, "--vni", str(VNI),
               "--ip", spec.underlay_ip, "--vnic", vnic, *extra]
        if popen:
            return self.lab.popen(self.lab.host_ns(host), *cmd)
        return self.lab.exec(self.lab.host_ns(host), *cmd)

    def put(self, spec: HostSpec) -> None:
        self.register(spec if spec in self.hosts else self.h3, spec, "--once")

    def delete(self, spec: HostSpec) -> None:
        self.etcd.delete(key_for("/varpd", VNI, spec.guest_mac))

    def overlay(self, host: HostSpec) -> dict:
        status, body = self.lab.api(host, "/v1/overlays/vx23")
        assert status == 200, body
        return body

    def start(self, host: HostSpec) -> None:
        self.lab.start_varpd(host, self.configs[host.name])


@pytest.fixture(scope="module")
def elab(tmp_path_factory):
    require_etcd()
    workdir = tmp_path_factory.mktemp("etcdlab")
    hosts = seed_hosts(3)
    lab = Lab(hosts, prefix=session_prefix("vt-", "e"))
    etcd = None
    try:
        lab.up()
        run("ip", "-n", lab.underlay, "addr", "add", f"{ETCD_IP}/24", "dev", "ubr0")
        etcd = EtcdServer(workdir / "etcd", host=ETCD_IP, client_port=2379, peer_port=2380, netns=lab.underlay)
        etcd.start()
        el = EtcdLab(lab, etcd, workdir)
        for h in hosts:  # each host writes its own VNIC (no lease: the seed mapping stays)
            el.register(h, h, "--once")
        props = {"etcd/endpoints": etcd.endpoint, "etcd/timeout": 2, "etcd/retry_max": 1}
        for h in hosts:
            d = workdir / h.name
            (d / "state").mkdir(parents=True, exist_ok=True)
            el.configs[h.name] = write_varpd_config(d / "varpd.toml", h, state_dir=d / "state",
                                                    sock=d / "varpd.sock", search="etcd", properties=props)
            el.start(h)
        for h in hosts:
            lab.wait_ready(h)
        for h in hosts:
            lab.attach_guest(h)
        wait_all_pushed(lab, hosts, 10, "entries pushed from etcd")
        yield el
    finally:
        if etcd is not None:
            etcd.stop(signal.SIGKILL)
        lab.down()


def test_guests_ping_over_the_etcd_mapping(elab):
    assert elab.overlay(elab.h1)["mode"] == "push" and elab.overlay(elab.h1)["status"] == "ONLINE"
    ping(elab.lab, elab.lab.guest_ns(elab.h1), elab.h2.guest_ip4)
    ping(elab.lab, elab.lab.guest_ns(elab.h2), elab.h3.guest_ip6, v6=True)


def test_put_and_delete_reprogram_every_host_without_restart(elab):
    lab, h1, h2, h3 = elab.lab, elab.h1, elab.h2, elab.h3
    g4 = HostSpec("host3", h3.underlay_ip, "de:ad:be:ef:00:03", "10.55.55.5", "fe80::6")
    gns = lab.add_guest(h3, mac=g4.guest_mac, ip4=g4.guest_ip4, ip6=g4.guest_ip6, vnic="vnic1", tag="guest4")
    try:
        lab.attach_guest(h3, vnic="vnic1", timeout=2)
        elab.put(g4)
        for h in (h1, h2):
            wait_for(lambda: remote_fdb_ok(lab, h, [g4]) and remote_neigh_ok(lab, h, [g4]), 5,
                     f"{h.name} to program the guest put into etcd")
        ping(lab, lab.guest_ns(h1), g4.guest_ip4)
        ping(lab, gns, h2.guest_ip6, v6=True)

        elab.delete(g4)
        for h in (h1, h2):
            wait_for(lambda: g4.guest_mac not in fdb(lab, h) and g4.guest_ip4 not in neigh(lab, h), 5,
                     f"{h.name} to remove the guest deleted from etcd")
        assert remote_fdb_ok(lab, h1, elab.remotes(h1))
    finally:
        lab.remove_guest(gns)


def test_etcd_outage_keeps_serving_then_catches_up(elab):
    lab, etcd = elab.lab, elab.etcd
    x = HostSpec("host3", elab.h3.underlay_ip, "02:00:00:00:00:77", "10.55.55.77", "fe80::77")
    etcd.stop()
    try:
        for h in elab.hosts:
            wait_for(lambda: elab.overlay(h)["status"] == "DEGRADED", 10, f"{h.name} DEGRADED")
        details = elab.overlay(elab.h1)["details"]
        assert "etcd unreachable" in details and ETCD_IP in details, details
        # still serving what it knew
        ping(lab, lab.guest_ns(elab.h1), elab.h2.guest_ip4)
        assert remote_fdb_ok(lab, elab.h1, elab.remotes(elab.h1))
        outage_lines = [ln for ln in lab.log_path(elab.h1).read_text().splitlines() if "event=outage" in ln]
        time.sleep(2)
        again = [ln for ln in lab.log_path(elab.h1).read_text().splitlines() if "event=outage" in ln]
        assert len(outage_lines) == len(again) == 1, again
    finally:
        etcd.start()
    elab.put(x)
    for h in (elab.h1, elab.h2):
        wait_for(lambda: remote_fdb_ok(lab, h, [x]) and remote_neigh_ok(lab, h, [x]), 10,
                 f"{h.name} to catch up after etcd came back")
        wait_for(lambda: elab.overlay(h)["status"] == "ONLINE", 5, f"{h.name} ONLINE again")
    elab.delete(x)
    for h in (elab.h1, elab.h2):
        wait_for(lambda: x.guest_mac not in fdb(lab, h), 5, f"{h.name}: cleanup")


def test_change_made_while_a_daemon_is_dead_arrives_after_restart(elab):
    lab, h1, h2 = elab.lab, elab.h1, elab.h2
    y = HostSpec("host3", elab.h3.underlay_ip, "02:00:00:00:00:78", "10.55.55.78", "fe80::78")
    assert lab.stop_varpd(h2, signal.SIGKILL) == -signal.SIGKILL
    elab.put(y)
    wait_for(lambda: remote_fdb_ok(lab, h1, [y]), 5, "host1 to program the new record")
    time.sleep(0.3)
    assert y.guest_mac not in fdb(lab, h2)
    elab.start(h2)
    lab.wait_ready(h2)
    wait_for(lambda: remote_fdb_ok(lab, h2, [y]) and remote_neigh_ok(lab, h2, [y]), 5,
             "the restarted host2 to program what changed while it was dead")
    ping(lab, lab.guest_ns(h2), elab.h1.guest_ip4)
    elab.delete(y)
    for h in (h1, h2):
        wait_for(lambda: y.guest_mac not in fdb(lab, h), 5, f"{h.name}: cleanup")


def test_dead_hosts_records_expire_with_their_lease(elab):
    lab, h1, h2, h3 = elab.lab, elab.h1, elab.h2, elab.h3
    z = HostSpec("host3", h3.underlay_ip, "02:00:00:00:00:79", "10.55.55.79", "fe80::79")
    proc = elab.register(h3, z, "--ttl", "2", popen=True)
    try:
        line = proc.stdout.readline()
        assert "registered 1 VNIC" in line, line + (proc.stderr.read() if proc.poll() is not None else "")
        for h in (h1, h2):
            wait_for(lambda: remote_fdb_ok(lab, h, [z]), 5, f"{h.name} to program the registered VNIC")
        time.sleep(2.5)  # the lease is kept alive past its TTL while the register process runs
        assert remote_fdb_ok(lab, h1, [z])
        proc.kill()  # the "host" dies: no revoke, the lease just stops being renewed
        proc.wait(5)
        t0 = time.monotonic()
        for h in (h1, h2):
            wait_for(lambda: z.guest_mac not in fdb(lab, h) and z.guest_ip4 not in neigh(lab, h), 8,
                     f"{h.name} to drop the dead host's entries after the TTL")
        assert time.monotonic() - t0 < 6
        assert remote_fdb_ok(lab, h1, elab.remotes(h1))
    finally:
        if proc.poll() is None:
            proc.kill()
