"""Helpers for the overlay end-to-end tests (kernel state, traffic, daemon-backed labs)."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from varpd.lab import HostSpec, Lab, seed_hosts, session_prefix, write_hosts_json, write_varpd_config

VX = "vx23"
BR = "br0"


def require(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} on PATH")


def wait_for(pred: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll `pred` until truthy; AssertionError naming `what` (and the last value) on timeout."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


# kernel state ---------------------------------------------------------------------------------
def fdb(lab: Lab, host: HostSpec, dev: str = VX) -> dict[str, dict]:
    """Remote (dst-carrying) FDB entries of `dev`: mac → {"dst", "state", "flags", …}."""
    out = lab.exec(lab.host_ns(host), "bridge", "-j", "fdb", "show", "dev", dev).stdout
    return {e["mac"]: e for e in json.loads(out or "[]") if "dst" in e}


def neigh(lab: Lab, host: HostSpec, dev: str = VX) -> dict[str, dict]:
    """Neighbour entries of `dev` (both families): ip → {"lladdr", "state", …}."""
    out = lab.exec(lab.host_ns(host), "ip", "-j", "neigh", "show", "dev", dev).stdout
    return {e["dst"]: e for e in json.loads(out or "[]")}


def is_permanent_fdb(e: dict) -> bool:
    return e.get("state") == "permanent" and "self" in e.get("flags", [])


def is_permanent_neigh(e: dict) -> bool:
    return "PERMANENT" in e.get("state", [])


def remote_fdb_ok(lab: Lab, host: HostSpec, remotes: list[HostSpec]) -> bool:
    have = fdb(lab, host)
    return all(r.guest_mac in have and have[r.guest_mac]["dst"] == r.underlay_ip
               and is_permanent_fdb(have[r.guest_mac]) for r in remotes)


def remote_neigh_ok(lab: Lab, host: HostSpec, remotes: list[HostSpec], dev: str = VX) -> bool:
    have = neigh(lab, host, dev)
    return all(ip in have and have[ip].get("lladdr") == r.guest_mac and is_permanent_neigh(have[ip])
               for r in remotes for ip in (r.guest_ip4, r.guest_ip6))


# traffic ---------------------------------------------------------------------------------------
def wait_all_pushed(lab: Lab, hosts: list[HostSpec], timeout: float, what: str = "pushed entries",
                    neigh_dev: str = VX) -> None:
    """Until every host has every other host's FDB and neighbour entries (push mode: no traffic needed);
    a flooding overlay keeps its neighbour entries on the bridge (`neigh_dev`)."""
    for h in hosts:
        others = [r for r in hosts if r.underlay_ip != h.underlay_ip]
        wait_for(lambda: remote_fdb_ok(lab, h, others) and remote_neigh_ok(lab, h, others, neigh_dev), timeout,
                 f"{h.name}: {what}")


def ping(lab: Lab, ns: str, dst: str, *, v6: bool = False, attempts: int = 5, count: int = 3,
         wait: float = 1.0) -> subprocess.CompletedProcess:
    """Succeeds when one run of `ping -cN` gets a reply; on-demand loses the first packets."""
    target = f"{dst}%eth0" if v6 and dst.startswith("fe80:") else dst
    cmd = ["ping", *(["-6"] if v6 else []), "-n", "-c", str(count), "-i", "0.2", "-W", str(wait), target]
    res = None
    for _ in range(attempts):
        res = lab.exec(ns, *cmd, check=False, timeout=15)
        if res.returncode == 0:
            return res
    raise AssertionError(f"{ns}: `{' '.join(cmd)}` failed {attempts} times:\n{res.stdout}{res.stderr}")


def ping_stats(out: str) -> tuple[int, int]:
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
    assert m, f"cannot parse ping output:\n{out}"
    return int(m.group(1)), int(m.group(2))


_SERVER = r"""
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(30)
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(30); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    h.update(b); n += len(b)
c.close()
print(n, h.hexdigest(), flush=True)
"""

_CLIENT = r"""
import hashlib, os, socket, sys, time
data = os.urandom(int(sys.argv[3])); deadline = time.monotonic() + 15
while True:
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.3)
c.settimeout(30); c.sendall(data); c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"""


def tcp_transfer(lab: Lab, src_ns: str, dst_ns: str, dst_ip: str, size: int, port: int = 5201) -> tuple[str, str]:
    """Send `size` random bytes src → dst over TCP; return (sent "len sha", received "len sha")."""
    server = lab.popen(dst_ns, sys.executable, "-c", _SERVER, dst_ip, str(port))
    try:
        line = server.stdout.readline()
        assert line.strip() == "listening", f"TCP server in {dst_ns} did not start: {line}{server.stderr.read()}"
        sent = lab.exec(src_ns, sys.executable, "-c", _CLIENT, dst_ip, str(port), str(size), timeout=60).stdout
        got, err = server.communicate(timeout=30)
        return sent.strip(), got.strip()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def terminate(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 3) -> None:
    """Stop a process this test started (by its pid): `sig` (SIGINT lets tcpdump flush), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(2)


class UnderlayCapture:
    """tcpdump on each host's underlay eth0 of everything that is not VXLAN (`-e`: link headers too);
    or, given `namespaces` (name → namespace) and `bpf`, on eth0 of those (guests, say: `promiscuous`
    sees frames to multicast groups the guest did not join, MLD reports among them)."""

    FILTER = f"not (udp port {4789})"

    def __init__(self, lab: Lab, workdir: Path, namespaces: dict[str, str] | None = None, bpf: str | None = None,
                 promiscuous: bool = False):
        self.lab, self.workdir, self.procs, self.promiscuous = lab, workdir, {}, promiscuous
        self.namespaces = namespaces or {h.name: lab.host_ns(h) for h in lab.hosts}
        self.bpf = self.FILTER if bpf is None else bpf

    def start(self) -> "UnderlayCapture":
        for name, ns in self.namespaces.items():
            out, err = self.workdir / f"cap-{name}.txt", self.workdir / f"cap-{name}.err"
            with open(out, "w") as o, open(err, "w") as e:
                self.procs[name] = (self.lab.popen(ns, "tcpdump", "-i", "eth0", "-n", "-e", "-l", "-Z", "root",
                                                   *([] if self.promiscuous else ["-p"]),
                                                   *([self.bpf] if self.bpf else []), stdout=o, stderr=e), out, err)
        for name, (_, _, err) in self.procs.items():
            wait_for(lambda: "listening on" in err.read_text(), 10, f"tcpdump on {name} to start")
        return self

    def stop(self) -> dict[str, list[str]]:
        lines = {}
        for name, (proc, out, _) in self.procs.items():
            terminate(proc, signal.SIGINT)
            lines[name] = out.read_text().splitlines()
        self.procs.clear()
        return lines


# guest-layer addresses that must never appear bare (outside VXLAN) on the underlay
LEAK = re.compile(r"10\.55\.55\.\d|de:ad:be:ef|fe80::[3-9a-f](?![0-9a-f:])", re.I)


# daemon-backed labs -----------------------------------------------------------------------------
@dataclass
class Overlay:
    lab: Lab
    workdir: Path
    mode: str
    hosts: list[HostSpec]
    hosts_json: dict[str, Path] = field(default_factory=dict)
    configs: dict[str, Path] = field(default_factory=dict)
    initial_fdb: dict[str, dict] = field(default_factory=dict)
    initial_neigh: dict[str, dict] = field(default_factory=dict)
    neigh_dev: str = VX  # vxlan/flood=replicate: the bridge answers ARP/NS, from entries on itself

    @property
    def h1(self) -> HostSpec:
        return self.hosts[0]

    @property
    def h2(self) -> HostSpec:
        return self.hosts[1]

    @property
    def h3(self) -> HostSpec:
        return self.hosts[2]

    def g(self, host: HostSpec) -> str:
        return self.lab.guest_ns(host)

    def remotes(self, host: HostSpec) -> list[HostSpec]:
        return [h for h in self.hosts if h.underlay_ip != host.underlay_ip]

    def wait_pushed(self, timeout: float = 5) -> None:
        """Until every host has every other host's FDB and neighbour entries (push mode: no traffic needed)."""
        wait_all_pushed(self.lab, self.hosts, timeout, neigh_dev=self.neigh_dev)

    def write_hosts(self, extra=(), only: HostSpec | None = None) -> None:
        """(Re)write every host's hosts.json (atomic rename) with the lab's hosts + `extra`."""
        for h in self.hosts:
            if only is None or only == h:
                write_hosts_json(self.hosts_json[h.name], self.hosts, extra)

    def start(self, host: HostSpec, wrapper: tuple[str, ...] = ()) -> None:
        self.lab.start_varpd(host, self.configs[host.name], wrapper)

    def log_text(self, host: HostSpec) -> str:
        return self.lab.log_path(host).read_text(errors="replace")


@contextmanager
def overlay_lab(workdir: Path, *, tag: str, mode: str = "push", properties: dict[str, dict] | None = None,
                settle: float = 0.0, reconcile_interval: float = 1.0, daemon: dict | None = None,
                underlay: str = "ipv4") -> Iterator[Overlay]:
    """3-host lab with the seed's mapping and a varpd per host; always torn down.

    `properties`: host name → extra overlay properties (e.g. native DHCP on one host).
    `underlay`: "ipv6" puts the hosts at 2001:db8::N (hosts.json and vxlan/listen_ip in IPv6).
    The initial FDB/neighbour tables of every host are recorded before any guest traffic,
    `settle` seconds after all daemons are ready and the guests are attached.
    """
    hosts = seed_hosts(3, underlay=underlay)
    lab = Lab(hosts, prefix=session_prefix("vt-", tag))
    ov = Overlay(lab, workdir, mode, hosts)
    if any(p.get("vxlan/flood") == "replicate" for p in (properties or {}).values()):
        ov.neigh_dev = "br0"
    try:
        lab.up()
        for h in hosts:
            d = workdir / h.name
            (d / "state").mkdir(parents=True, exist_ok=True)
            ov.hosts_json[h.name] = d / "hosts.json"
            write_hosts_json(ov.hosts_json[h.name], hosts)
            ov.configs[h.name] = write_varpd_config(
                d / "varpd.toml", h, hosts_json=ov.hosts_json[h.name], state_dir=d / "state", sock=d / "varpd.sock",
                mode=mode, properties=(properties or {}).get(h.name), reconcile_interval=reconcile_interval,
                daemon=daemon)
        for h in hosts:
            ov.start(h)
        for h in hosts:
            lab.wait_ready(h)
        for h in hosts:
            lab.attach_guest(h)
        if settle:
            time.sleep(settle)
        for h in hosts:
            ov.initial_fdb[h.name] = fdb(lab, h)
            ov.initial_neigh[h.name] = neigh(lab, h, ov.neigh_dev)
        yield ov
    finally:
        lab.down()
