"""FRR (Debian's frr 8.4) in a lab namespace: zebra + bgpd started directly, no watchfrr, no /etc/frr.

Recipe that works unprivileged-path style: every path FRR uses is given on the command line
(config file, pid files, the zserv socket, the vty socket directory) inside one work directory
owned by the frr user, since the daemons drop to frr:frr and root is not in the frrvty group
(`-u root` is refused: "user(root) is not part of vty group").  vtysh reaches them with
``--vty_socket DIR``.

`FrrVtep.vtep()` gives a host FRR's own EVPN on a Linux VXLAN device (`advertise-all-vni`): a
bridge with the VXLAN device (learning off, neigh_suppress on: the bridge answers ARP/NDP from the
neighbour entries zebra installs on the SVI for remote MAC/IP routes) and an SVI address; the
guests' addresses are made known to zebra as neighbour entries on the SVI, from which it
advertises MAC/IP routes.  `route_reflector=True` makes a BGP route reflector without a VTEP.
"""

from __future__ import annotations

import json
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from varpd.lab.topology import LabError, run

FRR_LIB = Path("/usr/lib/frr")


def frr_missing() -> str | None:
    if not (FRR_LIB / "bgpd").exists() or not (FRR_LIB / "zebra").exists() or shutil.which("vtysh") is None:
        return "FRR is not installed (Debian package frr: /usr/lib/frr/zebra, bgpd, vtysh)"
    try:
        pwd.getpwnam("frr")
    except KeyError:
        return "no frr user (Debian package frr creates it)"
    return None


@dataclass
class FrrRouter:
    """`workdir` is made by start() under the system's temporary directory (world-traversable):
    FRR runs as frr and must reach it, and a pytest tmp_path lives below pytest-of-root, which
    every pytest session resets to 0700 (another session starting made bgpd fail with "Can't
    create pid lock file ... Permission denied")."""

    ns: str
    router_id: str
    asn: int
    neighbors: tuple[str, ...]
    route_reflector: bool = False
    log_level: str = "informational"
    workdir: Path = field(default=Path(), init=False)
    _procs: dict = field(default_factory=dict, repr=False)

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    def config(self) -> str:
        lines = ["frr defaults datacenter", f"hostname {self.ns}",
                 f"log file {self.workdir / 'frr.log'} {self.log_level}", f"router bgp {self.asn}",
                 f" bgp router-id {self.router_id}", " no bgp default ipv4-unicast"]
        if self.route_reflector:
            lines.append(f" bgp cluster-id {self.router_id}")
        for n in self.neighbors:
            lines += [f" neighbor {n} remote-as {self.asn}", f" neighbor {n} timers connect 1"]
        lines.append(" address-family l2vpn evpn")
        for n in self.neighbors:
            lines.append(f"  neighbor {n} activate")
            if self.route_reflector:
                lines.append(f"  neighbor {n} route-reflector-client")
        if not self.route_reflector:
            lines.append("  advertise-all-vni")
        lines += [" exit-address-family", ""]
        return "\n".join(lines)

    def _args(self, daemon: str) -> list[str]:
        r = self.run_dir
        return ["ip", "netns", "exec", self.ns, str(FRR_LIB / daemon), "-i", str(r / f"{daemon}.pid"),
                "-z", str(r / "zserv.api"), "--vty_socket", str(r), "-f", str(self.workdir / "frr.conf"),
                "-A", "127.0.0.1"]

    def start(self) -> "FrrRouter":
        self.workdir = Path(tempfile.mkdtemp(prefix=f"varpd-frr-{self.ns}-"))
        self.workdir.chmod(0o755)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "frr.conf").write_text(self.config())
        (self.workdir / "frr.log").touch()
        frr = pwd.getpwnam("frr")
        for p in (self.workdir, self.run_dir, self.workdir / "frr.log", self.workdir / "frr.conf"):
            shutil.chown(p, frr.pw_uid, frr.pw_gid)
        self.start_daemon("zebra")
        self.start_daemon("bgpd")
        return self

    def start_daemon(self, daemon: str) -> None:
        """Run `daemon` in the foreground (no -d: this process owns it, reaps it, sees its errors)."""
        (self.run_dir / f"{daemon}.pid").unlink(missing_ok=True)
        out = open(self.workdir / f"{daemon}.out", "ab")
        proc = subprocess.Popen(self._args(daemon), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        self._procs[daemon] = proc
        deadline = time.monotonic() + 10
        while not (self.run_dir / f"{daemon}.vty").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (self.workdir / f"{daemon}.out").read_text(errors="replace")[-2000:]
                self.kill(daemon)
                raise LabError(f"{self.ns}: {daemon} did not start (status {proc.returncode}):\n{text}")
            time.sleep(0.05)

    def kill(self, daemon: str, sig: int = signal.SIGKILL) -> None:
        proc = self._procs.pop(daemon, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(2)
        for leftover in (f"{daemon}.vty", f"{daemon}.pid"):  # a pid file left behind stops the next start
            (self.run_dir / leftover).unlink(missing_ok=True)

    def stop(self) -> None:
        for daemon in ("bgpd", "zebra"):
            self.kill(daemon, signal.SIGTERM)
        if self.workdir != Path() and self.workdir.name.startswith("varpd-frr-"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def vtysh(self, *commands: str) -> str:
        args = ["ip", "netns", "exec", self.ns, "vtysh", "--vty_socket", str(self.run_dir)]
        for c in commands:
            args += ["-c", c]
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise LabError(f"{self.ns}: vtysh {commands}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def evpn_routes(self) -> list[dict]:
        """`show bgp l2vpn evpn json`, flattened: one dict per path with its rd, route type and prefix."""
        data = json.loads(self.vtysh("show bgp l2vpn evpn json"))
        out = []
        for rd, block in data.items():
            if not isinstance(block, dict) or "rd" not in block:
                continue
            for prefix, entry in block.items():
                if not isinstance(entry, dict) or "paths" not in entry:
                    continue
                for group in entry["paths"]:
                    for path in (group if isinstance(group, list) else [group]):
                        out.append(dict(path, rd=rd, prefix=prefix))
        return out

    def established(self, neighbor: str) -> bool:
        try:
            data = json.loads(self.vtysh(f"show bgp neighbors {neighbor} json"))
        except (LabError, ValueError):
            return False
        return data.get(neighbor, {}).get("bgpState") == "Established"


def make_vtep(ns: str, *, vni: int, local_ip: str, bridge: str, vxlan: str, svi: list[str],
              ports: tuple[str, ...] = (), neigh_suppress: bool = True) -> None:
    """The Linux side of an FRR VTEP: `vxlan` in `bridge` (with `ports`) and SVI addresses;
    `neigh_suppress`: the bridge answers ARP/NDP from zebra's entries instead of flooding it."""
    def ip(*a: str) -> None:
        run("ip", "-n", ns, *a)

    ip("link", "add", bridge, "type", "bridge")
    ip("link", "set", bridge, "addrgenmode", "none")
    ip("link", "add", vxlan, "type", "vxlan", "id", str(vni), "local", local_ip, "dstport", "4789", "nolearning")
    ip("link", "set", vxlan, "master", bridge, "addrgenmode", "none")
    run("bridge", "-n", ns, "link", "set", "dev", vxlan, "learning", "off",
        "neigh_suppress", "on" if neigh_suppress else "off")
    for p in ports:
        ip("link", "set", p, "master", bridge)
    ip("link", "set", vxlan, "up")
    ip("link", "set", bridge, "up")
    for a in svi:
        ip("addr", "add", a, "dev", bridge, *(["nodad"] if ":" in a else []))


def announce_guests(ns: str, bridge: str, guests: list[tuple[str, str]]) -> None:
    """The guests' (ip, mac) as neighbour entries on the SVI, from which zebra advertises MAC/IP
    routes.  Once zebra runs and the guests' ports are on the bridge: entries made before that
    were sometimes never advertised (the MAC-only route came, the MAC/IP ones did not)."""
    for address, mac in guests:
        run("ip", "-n", ns, "neigh", "replace", address, "lladdr", mac, "dev", bridge, "nud", "permanent")
