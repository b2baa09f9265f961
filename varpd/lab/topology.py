"""A network-namespace overlay lab: one underlay bridge, N "hosts", one guest per host.

A guest is a namespace made with the lab (like varpd-netns@.service on a real host) whose eth0 is
made by the host's varpd when the guest is attached (`create-vnic`, over the daemon's socket); a
hand-made VTEP without varpd gets the same port from ip/bridge commands.

Sync and subprocess-driven (`ip`, `sysctl`): this is test and lab tooling, never daemon
code. Every namespace is ``<prefix>underlay``, ``<prefix>hostN`` or ``<prefix>hostN-…``;
all links live inside those namespaces, so deleting the namespaces (after killing what
runs in them) removes everything. ``down()`` and ``cleanup()`` work after a partial ``up()``.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

VXLAN_PORT = 4789
GUEST_MTU = 1400  # below the VXLAN device's 1450 on a 1500-byte underlay


class LabError(RuntimeError):
    """A lab command failed; the message names the command and its stderr."""


@dataclass(frozen=True)
class HostSpec:
    name: str  # "host1"
    underlay_ip: str  # "192.0.2.1"
    guest_mac: str  # the VNIC MAC, key of hosts.json
    guest_ip4: str  # "10.55.55.2" (record "arp")
    guest_ip6: str  # "fe80::3" (record "ndp")
    dhcp_proxy: str | None = None  # record "dhcp-proxy"

    def record(self, port: int = VXLAN_PORT) -> dict:
        rec: dict = {"arp": self.guest_ip4, "ip": self.underlay_ip, "ndp": self.guest_ip6, "port": port}
        if self.dhcp_proxy:
            rec["dhcp-proxy"] = self.dhcp_proxy
        return rec


UNDERLAYS = ("ipv4", "ipv6")


def seed_hosts(n: int = 3, *, dhcp_proxy: bool = True, underlay: str = "ipv4") -> list[HostSpec]:
    """The seed's layout: hostN at 192.0.2.N (`underlay="ipv6"`: 2001:db8::N), MAC de:ad:be:ef:00:(N-1),
    10.55.55.(N+1), fe80::(N+2)."""
    if underlay not in UNDERLAYS:
        raise ValueError(f"underlay must be one of {', '.join(UNDERLAYS)}, not {underlay!r}")
    return [
        HostSpec(
            f"host{i}", f"192.0.2.{i}" if underlay == "ipv4" else f"2001:db8::{i:x}", f"de:ad:be:ef:00:{i - 1:02x}",
            f"10.55.55.{i + 1}", f"fe80::{i + 2:x}",
            dhcp_proxy="de:ad:be:ef:00:00" if dhcp_proxy and i == 2 else None,
        )
        for i in range(1, n + 1)
    ]


def underlay_cidr(ip: str) -> str:
    """A lab host's underlay address with its prefix: /24 in 192.0.2.0/24, /64 in 2001:db8::/64."""
    return f"{ip}/64" if ":" in ip else f"{ip}/24"


def run(*cmd: str, check: bool = True, timeout: float = 30.0, input: str | None = None) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(cmd)}: timed out after {timeout}s") from None
    if check and res.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({res.returncode}): {(res.stderr or res.stdout).strip()}")
    return res


def varpd_bin() -> str:
    """$VARPD_BIN, else the `varpd` script of the running interpreter (not a pyenv shim), else PATH's."""
    if os.environ.get("VARPD_BIN"):
        return os.environ["VARPD_BIN"]
    sibling = Path(sys.executable).parent / "varpd"
    return str(sibling) if sibling.exists() else (shutil.which("varpd") or "varpd")


def list_namespaces(prefix: str) -> list[str]:
    out = run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip() and line.split()[0].startswith(prefix)]


def _kill_ns(ns: str) -> None:
    """SIGKILL every process in `ns`, then delete it (a namespace outlives `ip netns del` while used)."""
    for _ in range(20):
        pids = [int(p) for p in run("ip", "netns", "pids", ns, check=False).stdout.split() if p.isdigit()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    run("ip", "netns", "del", ns, check=False)


def _owner_alive(ns: str, prefix: str) -> bool:
    """Names made by session_prefix() embed the owning pid: vt-<pid><tag>-…"""
    m = re.match(re.escape(prefix) + r"(\d+)", ns)
    if not m:
        return False
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_namespaces(names: Iterable[str]) -> list[str]:
    """Kill what runs in each of these namespaces and delete it; → the ones that existed."""
    present = set(list_namespaces(""))
    removed = []
    for ns in names:
        if ns in present:
            _kill_ns(ns)
            removed.append(ns)
    return removed


def cleanup(prefix: str = "vt-", *, stale_only: bool = False) -> list[str]:
    """Remove every namespace starting with `prefix` (stale_only: only those whose owner pid is dead)."""
    if not prefix:
        raise ValueError("cleanup needs a non-empty prefix")
    return remove_namespaces(ns for ns in list_namespaces(prefix) if not (stale_only and _owner_alive(ns, prefix)))


def session_prefix(base: str = "vt-", tag: str = "") -> str:
    """A prefix unique to this process, so concurrent sessions never remove each other's labs."""
    return f"{base}{os.getpid()}{tag}-"


def write_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_hosts_json(path: str | Path, hosts: Iterable[HostSpec], extra: Iterable = (), port: int = VXLAN_PORT) -> dict:
    """Write a files-backend mapping atomically; `extra` holds HostSpecs or (mac, record) pairs."""
    data = {h.guest_mac: h.record(port) for h in hosts}
    for item in extra:
        if isinstance(item, HostSpec):
            data[item.guest_mac] = item.record(port)
        else:
            mac, rec = item
            data[mac] = rec
    write_atomic(path, json.dumps(data, indent=4, sort_keys=True) + "\n")
    return data


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def write_varpd_config(path: str | Path, host: HostSpec, *, hosts_json: str | Path | None = None,
                       state_dir: str | Path, sock: str | Path, mode: str = "push", overlay: str = "vx23",
                       vni: int = 23, bridge: str = "br0", reconcile_interval: float = 1.0,
                       log_level: str = "debug", search: str = "files", properties: dict | None = None,
                       daemon: dict | None = None) -> Path:
    """A daemon config for one lab host; `search` picks the backend, `properties` adds its properties,
    `daemon` more [daemon] settings."""
    props = {"vxlan/listen_ip": host.underlay_ip, "vxlan/listen_port": VXLAN_PORT}
    if search == "files":
        props["files/config"] = str(hosts_json)
    props.update(properties or {})
    lines = ["[daemon]", f"state_dir = {_toml_value(state_dir)}", f"socket = {_toml_value(sock)}",
             f"reconcile_interval = {float(reconcile_interval)!r}", f"log_level = {_toml_value(log_level)}",
             *(f"{k} = {_toml_value(v)}" for k, v in (daemon or {}).items()), "",
             "[[overlays]]", f"name = {_toml_value(overlay)}", f"vni = {vni}", f"search = {_toml_value(search)}",
             f"mode = {_toml_value(mode)}", f"bridge = {_toml_value(bridge)}", "", "[overlays.properties]"]
    lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in props.items()]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def http_get(sock: str | Path, url: str, timeout: float = 2.0) -> tuple[int, object]:
    """GET over the daemon's unix socket → (status, parsed JSON or text)."""
    return http_request(sock, "GET", url, timeout=timeout)


def http_request(sock: str | Path, method: str, url: str, body: object = None,
                 timeout: float = 2.0) -> tuple[int, object]:
    """One request over the daemon's unix socket (`body` sent as JSON) → (status, parsed JSON or text)."""
    conn = _UnixHTTPConnection(str(sock), timeout)
    try:
        if body is None:
            conn.request(method, url)
        else:
            conn.request(method, url, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(body)
    except ValueError:
        return resp.status, body.decode(errors="replace")


@dataclass(frozen=True)
class _Guest:
    ns: str
    mac: str
    ip4: str | None
    ip6: str | None
    by_varpd: bool = False  # its VNIC was made by the host's daemon (create-vnic)

    def addresses(self) -> list[str]:
        return [a for a in (self.ip4 and f"{self.ip4}/24", self.ip6 and f"{self.ip6}/64") if a]


@dataclass
class _Daemon:
    proc: subprocess.Popen
    config: Path
    sock: Path
    log: Path


class Lab:
    def __init__(self, hosts: Iterable[HostSpec], prefix: str = "vt-", *, guest_mtu: int = GUEST_MTU):
        self.hosts = list(hosts)
        self.prefix = prefix
        self.guest_mtu = guest_mtu
        self.underlay = f"{prefix}underlay"
        self._made: list[str] = []
        self._guests: dict[tuple[str, str], _Guest] = {}  # (host, vnic) → the guest behind it
        self._procs: list[subprocess.Popen] = []
        self.daemons: dict[str, _Daemon] = {}

    # names -------------------------------------------------------------------------------
    def host_ns(self, host: HostSpec | str) -> str:
        return f"{self.prefix}{host if isinstance(host, str) else host.name}"

    def guest_ns(self, host: HostSpec | str, tag: str = "guest") -> str:
        return f"{self.host_ns(host)}-{tag}"

    def host(self, name: str) -> HostSpec:
        return next(h for h in self.hosts if h.name == name)

    def names(self) -> list[str]:
        """The namespaces up() makes."""
        return [self.underlay] + [n for h in self.hosts for n in (self.host_ns(h), self.guest_ns(h))]

    # build / tear down --------------------------------------------------------------------
    def _add_ns(self, ns: str) -> None:
        run("ip", "netns", "add", ns)
        self._made.append(ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")

    def up(self) -> "Lab":
        try:
            self._add_ns(self.underlay)
            run("ip", "-n", self.underlay, "link", "add", "ubr0", "type", "bridge")
            run("ip", "-n", self.underlay, "link", "set", "ubr0", "up")
            for h in self.hosts:
                hns, port = self.host_ns(h), f"u-{h.name}"[:15]
                self._add_ns(hns)
                run("ip", "-n", self.underlay, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", hns)
                run("ip", "-n", self.underlay, "link", "set", port, "master", "ubr0", "up")
                # nodad: usable at once (varpd would call the overlay DEGRADED until DAD passed)
                run("ip", "-n", hns, "addr", "add", underlay_cidr(h.underlay_ip), "dev", "eth0",
                    *(["nodad"] if ":" in h.underlay_ip else []))
                run("ip", "-n", hns, "link", "set", "eth0", "up")
                self.add_guest(h, mac=h.guest_mac, ip4=h.guest_ip4, ip6=h.guest_ip6, vnic="vnic0", tag="guest")
        except BaseException:
            self.down()
            raise
        return self

    def add_guest(self, host: HostSpec, *, mac: str, ip4: str | None, ip6: str | None,
                  vnic: str = "vnic0", tag: str = "guest") -> str:
        """A guest namespace (made like `ip netns add`, as varpd-netns@.service does on a host) for the
        guest `mac`; attach_guest() gives it its eth0, with `vnic` the port in the host namespace."""
        gns = self.guest_ns(host, tag)
        self._add_ns(gns)
        self._guests[(host.name, vnic)] = _Guest(gns, mac, ip4, ip6)
        return gns

    def _guest(self, host: HostSpec, vnic: str) -> "_Guest":
        guest = self._guests.get((host.name, vnic))
        if guest is None:
            raise LabError(f"{self.host_ns(host)}: {vnic} was not made by add_guest: its guest is unknown")
        return guest

    def remove_guest(self, gns: str) -> None:
        """The guest's VNIC deleted through its daemon (if it made it and runs), then its namespace."""
        for (hname, vnic), guest in list(self._guests.items()):
            if guest.ns == gns:
                d = self.daemons.get(hname)
                if guest.by_varpd and d is not None and d.proc.poll() is None:
                    http_request(d.sock, "DELETE", f"/v1/vnics/{vnic}", timeout=10.0)
                del self._guests[(hname, vnic)]
        _kill_ns(gns)  # a pair still there goes with it
        if gns in self._made:
            self._made.remove(gns)

    def attach_guest(self, host: HostSpec, vnic: str = "vnic0", bridge: str = "br0", timeout: float = 20.0) -> None:
        """Once `bridge` exists in the host namespace, the guest's port on it: on a host running varpd,
        `varpd create-vnic -m MAC -l OVERLAY --netns GUEST_NS --address IP4/24 --address IP6/64 --mtu
        GUEST_MTU VNIC` (its API request) for the overlay whose bridge it is; on a hand-made VTEP without
        varpd, the same steps with ip/bridge (the test of the lab alone, iproute2 interop peers).
        Either way the port is protected (illumos: `protection=mac-nospoof`): the guest MAC pinned
        (static, sticky), learning off, locked."""
        guest = self._guest(host, vnic)
        hns, deadline = self.host_ns(host), time.monotonic() + timeout
        while run("ip", "-n", hns, "link", "show", "dev", bridge, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise LabError(f"{hns}: bridge {bridge} did not appear within {timeout}s\n{self.log_tail(host)}")
            time.sleep(0.05)
        d = self.daemons.get(host.name)
        if d is None or d.proc.poll() is not None:
            self._attach_by_hand(host, vnic, bridge, guest)
            return
        try:
            status, overlays = http_get(d.sock, "/v1/overlays", timeout=10.0)
            names = [o["name"] for o in overlays if o.get("bridge") == bridge] if status == 200 else []
            if not names:
                raise LabError(f"{hns}: no overlay of varpd on {host.name} has bridge {bridge} ({status}: "
                               f"{overlays!r})")
            body = {"name": vnic, "overlay": names[0], "mac": guest.mac, "type": "veth", "netns": guest.ns,
                    "addresses": guest.addresses(), "mtu": self.guest_mtu}
            status, answer = http_request(d.sock, "POST", "/v1/vnics", body, timeout=30.0)
        except (OSError, http.client.HTTPException) as exc:
            raise LabError(f"{hns}: varpd on {host.name} did not answer create-vnic {vnic} "
                           f"({type(exc).__name__}: {exc}; wait_ready first)\n{self.log_tail(host)}") from None
        if status != 201:
            raise LabError(f"{hns}: create-vnic {vnic} on {names[0]} failed ({status}): {answer}")
        self._guests[(host.name, vnic)] = dataclasses.replace(guest, by_varpd=True)

    def _attach_by_hand(self, host: HostSpec, vnic: str, bridge: str, guest: "_Guest") -> None:
        hns, gns, mtu = self.host_ns(host), guest.ns, str(self.guest_mtu)
        run("ip", "-n", hns, "link", "add", vnic, "mtu", mtu, "type", "veth",
            "peer", "name", "eth0", "address", guest.mac, "mtu", mtu, "netns", gns)
        self.exec(hns, "sysctl", "-qw", f"net.ipv6.conf.{vnic}.disable_ipv6=1")  # a bridge port needs no address
        run("ip", "-n", hns, "link", "set", vnic, "master", bridge)
        run("bridge", "-n", hns, "fdb", "replace", guest.mac, "dev", vnic, "master", "static", "sticky")
        run("bridge", "-n", hns, "link", "set", "dev", vnic, "learning", "off", "locked", "on")
        run("ip", "-n", hns, "link", "set", vnic, "up")
        self.exec(gns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.eth0.disable_ipv6=0",
                  "net.ipv6.conf.eth0.accept_dad=0")
        # only the mapping's link-local: an EUI-64 one could be picked as source and never be resolvable
        run("ip", "-n", gns, "link", "set", "eth0", "addrgenmode", "none")
        if guest.ip4:
            run("ip", "-n", gns, "addr", "add", f"{guest.ip4}/24", "dev", "eth0")
        run("ip", "-n", gns, "link", "set", "eth0", "up")
        if guest.ip6:
            run("ip", "-n", gns, "addr", "add", f"{guest.ip6}/64", "dev", "eth0", "nodad")

    def down(self) -> None:
        for d in self.daemons.values():
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
        for d in self.daemons.values():
            try:
                d.proc.wait(3)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait(2)
        for p in self._procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(2)
            except subprocess.TimeoutExpired:
                pass
        self._procs.clear()
        for ns in reversed(list(dict.fromkeys(self._made + self.names()))):
            if ns in list_namespaces(ns):
                _kill_ns(ns)
        self._made.clear()

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # running things -----------------------------------------------------------------------
    def exec(self, ns: str, *cmd: str, check: bool = True, timeout: float = 30.0,
             input: str | None = None) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout, input=input)

    def popen(self, ns: str, *cmd: str, **kwargs) -> subprocess.Popen:
        """Started in `ns`; killed by down(). Defaults: text pipes for stdout and stderr."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kwargs)
        self._procs.append(proc)
        return proc

    write_hosts_json = staticmethod(write_hosts_json)

    # the daemon ---------------------------------------------------------------------------
    def start_varpd(self, host: HostSpec, config_path: str | Path, wrapper: Iterable[str] = ()) -> subprocess.Popen:
        """`wrapper`: argv the daemon's command is appended to and exec'd by (e.g. `unshare -m ...`)."""
        config_path = Path(config_path)
        sock = Path(tomllib.loads(config_path.read_text())["daemon"]["socket"])
        log = config_path.with_name("varpd.log")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(log, "ab") as logf:
            logf.write(f"--- lab: starting varpd in {self.host_ns(host)} at {time.strftime('%T')}\n".encode())
            logf.flush()
            proc = subprocess.Popen(["ip", "netns", "exec", self.host_ns(host), *wrapper, varpd_bin(), "daemon",
                                     "--config", str(config_path)], stdout=logf, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)  # outlives `varpd lab up` and its terminal
        self.daemons[host.name] = _Daemon(proc, config_path, sock, log)
        return proc

    def stop_varpd(self, host: HostSpec, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        d = self.daemons[host.name]
        if d.proc.poll() is None:
            d.proc.send_signal(sig)
            try:
                d.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait(2)
        return d.proc.returncode

    def socket_path(self, host: HostSpec) -> Path:
        return self.daemons[host.name].sock

    def log_path(self, host: HostSpec) -> Path:
        return self.daemons[host.name].log

    def log_tail(self, host: HostSpec, lines: int = 30) -> str:
        d = self.daemons.get(host.name)
        if d is None or not d.log.exists():
            return f"(no varpd log for {host.name})"
        tail = d.log.read_text(errors="replace").splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {d.log} ---\n" + "\n".join(tail)

    def api(self, host: HostSpec, url: str, timeout: float = 2.0) -> tuple[int, object]:
        return http_get(self.socket_path(host), url, timeout)

    def wait_ready(self, host: HostSpec, timeout: float = 20.0) -> dict:
        """Poll GET /v1/health until 200 with "ready": true; fail early if the daemon exits."""
        d, deadline, last = self.daemons[host.name], time.monotonic() + timeout, "no answer yet"
        while time.monotonic() < deadline:
            if d.proc.poll() is not None:
                raise LabError(f"varpd on {host.name} exited with {d.proc.returncode} before it was ready\n"
                               f"{self.log_tail(host)}")
            try:
                status, body = http_get(d.sock, "/v1/health", timeout=1.0)
                if status == 200 and isinstance(body, dict) and body.get("ready") is True:
                    return body
                last = f"HTTP {status}: {body!r}"[:300]
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise LabError(f"varpd on {host.name} not ready after {timeout}s ({d.sock}: {last})\n{self.log_tail(host)}")

    def varpd_cli(self, host: HostSpec, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess:
        return self.exec(self.host_ns(host), varpd_bin(), "--socket", str(self.socket_path(host)), *args,
                         check=False, timeout=timeout)
