"""The lab's mapping backends: one table row per backend, saying everything the lab does differently.

A row names the server the lab runs for it in the underlay namespace (argv, port, how
to tell it is ready, how to load the seed mapping into it) and the overlay properties
each host's varpd gets.  `varpd lab up --backend NAME` only ever reads this table, so
adding a backend is adding a row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from varpd.lab.topology import HostSpec, VXLAN_PORT, varpd_bin

SERVER_IP = "192.0.2.254"  # on the underlay bridge, reachable from every host namespace
VNI = 23
ETCD_BIN = "/usr/bin/etcd"


@dataclass(frozen=True)
class LabPaths:
    """What a backend's server and properties are built from."""

    workdir: Path
    hosts_json: Path
    vni: int = VNI
    server_ip: str = SERVER_IP


@dataclass(frozen=True)
class Probe:
    """How to tell the server is ready: a TCP connect, or an HTTP GET whose body contains `expect`."""

    path: str | None = None  # None: a TCP connect is enough
    expect: str = ""


@dataclass(frozen=True)
class SeedCommand:
    """A command run in one host's namespace to put that host's records into the server."""

    host: HostSpec
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Backend:
    name: str
    summary: str
    default_mode: str  # "push" needs a backend that can list its mapping
    modes: tuple[str, ...]
    port: int | None = None  # the server's port on server_ip; None: no server
    requires: str | None = None  # a binary the server needs (clear error if missing) ...
    package: str | None = None  # ... and the Debian package that has it
    server_argv: Callable[[LabPaths], list[str]] | None = None
    probe: Probe = Probe()
    seed: Callable[[LabPaths, list[HostSpec]], list[SeedCommand]] | None = None
    properties: Callable[[HostSpec, LabPaths], dict] = lambda host, paths: {}
    # files the server or the hosts need, written before anything starts (evpn: FRR's config)
    prepare: Callable[[LabPaths, list[HostSpec]], None] | None = None

    def missing(self) -> str | None:
        """Why this backend's server cannot start here (checked before anything is built), or None."""
        if self.requires and not os.path.exists(self.requires):
            return (f"--backend {self.name}: {self.requires} is missing"
                    + (f" (Debian package {self.package})" if self.package else ""))
        return None

    def endpoint(self, paths: LabPaths) -> str:
        return f"{paths.server_ip}:{self.port}"


def _etcd_argv(paths: LabPaths) -> list[str]:
    client, peer = f"http://{paths.server_ip}:2379", f"http://{paths.server_ip}:2380"
    return [ETCD_BIN, "--name", "lab", "--data-dir", str(paths.workdir / "etcd"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"lab={peer}", "--initial-cluster-state", "new",
            "--heartbeat-interval", "50", "--election-timeout", "300", "--log-level", "warn", "--logger", "zap"]


def _etcd_seed(paths: LabPaths, hosts: list[HostSpec]) -> list[SeedCommand]:
    """Each host writes its own VNIC with `varpd register --once` (no lease: the seed stays until deleted)."""
    out = []
    for h in hosts:
        vnic = f"{h.guest_mac},arp={h.guest_ip4},ndp={h.guest_ip6}"
        if h.dhcp_proxy:
            vnic += f",dhcp-proxy={h.dhcp_proxy}"
        out.append(SeedCommand(h, (varpd_bin(), "register", "--once", "--endpoints", f"{paths.server_ip}:2379",
                                   "--vni", str(paths.vni), "--ip", h.underlay_ip, "--port", str(VXLAN_PORT),
                                   "--vnic", vnic)))
    return out


EVPN_ASN = 65000
FRR_BGPD = "/usr/lib/frr/bgpd"


def _evpn_dir(paths: LabPaths) -> Path:
    return paths.workdir / "evpn-rr"


def _evpn_prepare(paths: LabPaths, hosts: list[HostSpec]) -> None:
    """FRR's route reflector config (every host a client), and each host's own record as its
    evpn/local file: what it advertises."""
    from varpd.lab.frr import FrrRouter
    from varpd.lab.topology import write_hosts_json

    d = _evpn_dir(paths)
    d.mkdir(exist_ok=True)
    rr = FrrRouter("underlay", router_id=paths.server_ip, asn=EVPN_ASN,
                   neighbors=tuple(h.underlay_ip for h in hosts), route_reflector=True)
    rr.workdir = d
    (d / "bgpd.conf").write_text(rr.config())
    for h in hosts:
        write_hosts_json(paths.workdir / f"evpn-{h.name}.json", [h])


def _evpn_argv(paths: LabPaths) -> list[str]:
    """bgpd alone (no zebra: a route reflector programs no kernel), staying root (-S: no switch to
    the frr user, which could not reach a lab directory under a 0700 parent)."""
    d = _evpn_dir(paths)
    return [FRR_BGPD, "-S", "--no_zebra", "-f", str(d / "bgpd.conf"), "-i", str(d / "bgpd.pid"), "--vty_socket", str(d),
            "-z", str(d / "zserv.api"), "-A", "127.0.0.1"]


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("files", "each varpd reads the lab's hosts.json", "push", ("push", "on-demand"),
            properties=lambda host, paths: {"files/config": str(paths.hosts_json)}),
    Backend("etcd", "etcd (etcd-server), each host writing its VNIC with varpd register",
            "push", ("push", "on-demand"), port=2379, requires=ETCD_BIN, package="etcd-server",
            server_argv=_etcd_argv,
            probe=Probe("/health", '"true"'), seed=_etcd_seed,
            properties=lambda host, paths: {"etcd/endpoints": f"{paths.server_ip}:2379", "etcd/timeout": 2,
                                            "etcd/retry_max": 2}),
    Backend("http", "varpd mapping-server serving the lab's hosts.json",
            "on-demand", ("on-demand",), port=8080,
            server_argv=lambda paths: [varpd_bin(), "mapping-server", "--hosts", str(paths.hosts_json),
                                       "--vni", str(paths.vni), "--listen", f"{paths.server_ip}:8080",
                                       "--keepalive", "5"],
            probe=Probe("/v1/health"),
            properties=lambda host, paths: {"http/url": f"http://{paths.server_ip}:8080", "http/timeout": "1"}),
    Backend("svp", "varpd svp-server serving the lab's hosts.json",
            "on-demand", ("on-demand",), port=1296,
            server_argv=lambda paths: [varpd_bin(), "svp-server", "--hosts", str(paths.hosts_json),
                                       "--vni", str(paths.vni), "--listen", f"{paths.server_ip}:1296"],
            properties=lambda host, paths: {"svp/host": paths.server_ip, "svp/port": 1296,
                                            "svp/underlay_ip": host.underlay_ip}),
    Backend("evpn", "an FRR BGP route reflector (frr), each varpd advertising its guest through gobgpd (gobgpd)",
            "push", ("push",), port=179, requires=FRR_BGPD, package="frr", server_argv=_evpn_argv,
            prepare=_evpn_prepare,
            properties=lambda host, paths: {"evpn/asn": EVPN_ASN, "evpn/neighbors": paths.server_ip,
                                            "evpn/local": str(paths.workdir / f"evpn-{host.name}.json"),
                                            "evpn/hold_time": 3}),
)}
