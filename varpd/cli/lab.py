"""`varpd lab`: a multi-host overlay on this machine, hosts and guests as network namespaces.

Each host namespace runs a real varpd with the chosen backend (files: the seed's
hosts.json; etcd, http: a server in the underlay namespace holding the same mapping,
see varpd/lab/backends.py); each guest namespace is a VM whose VNIC has the seed's MAC.
Everything made lives inside namespaces the lab records in lab.json, with the files it adds to
its --dir; `lab down` stops the recorded server and removes exactly those namespaces and files.
`lab up` ends by pinging every guest from every other (IPv4 and IPv6) and fails if one does not answer.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from varpd.cli.client import CliError
from varpd.lab import Lab, LabError, http_get, seed_hosts, write_hosts_json, write_varpd_config
from varpd.lab.backends import BACKENDS, SERVER_IP, Backend, LabPaths
from varpd.lab.checks import missing_tools, reachability
from varpd.lab.server import STATE_FILE, LabState, pid_alive, seed_server, start_server, stop_server, wait_server
from varpd.lab.topology import list_namespaces, remove_namespaces

DEFAULT_DIR = "/run/varpd-lab"
DEFAULT_PREFIX = "vl-"
START_BATCH = 4


def _say(msg: str) -> None:
    print(msg, flush=True)


def _mode(args: argparse.Namespace, backend: Backend) -> str:
    if args.mode is None:
        return backend.default_mode
    if args.mode not in backend.modes:
        raise CliError(f"--mode {args.mode}: the {backend.name} backend cannot list its mapping; "
                       f"use {' or '.join(backend.modes)}")
    return args.mode


def up(args: argparse.Namespace) -> str | int:
    if missing_tools():
        raise CliError(missing_tools())
    if list_namespaces(args.prefix):
        raise CliError(f"a lab with prefix {args.prefix!r} is already up: `varpd lab down` first")
    backend = BACKENDS[args.backend]
    mode = _mode(args, backend)
    if backend.missing():
        raise CliError(backend.missing())
    if args.underlay == "ipv6" and backend.name != "files":
        raise CliError(f"--underlay ipv6 needs --backend files (the {backend.name} server is at {SERVER_IP})")
    hosts = seed_hosts(args.hosts, underlay=args.underlay)
    workdir = Path(args.dir).resolve()  # absolute: it names the lab's processes (see pid_alive)
    made_dir = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(workdir)) - {STATE_FILE}
    lab = Lab(hosts, prefix=args.prefix)
    state = LabState(backend.name, mode, namespaces=tuple(lab.names()), made_dir=made_dir)

    def record(**changes) -> LabState:
        """Save what the lab made so far: `lab down` removes exactly that, even after a killed `lab up`."""
        new = dataclasses.replace(state, **changes)
        new = dataclasses.replace(new, files=tuple(sorted(set(os.listdir(workdir)) - before | {STATE_FILE})))
        new.save(workdir)
        return new

    state = record()
    paths = LabPaths(workdir=workdir, hosts_json=workdir / "hosts.json")
    write_hosts_json(paths.hosts_json, hosts)
    if backend.prepare is not None:
        backend.prepare(paths, hosts)
    state = record()
    try:
        _say(f"[lab] building underlay {args.prefix}underlay and {len(hosts)} hosts with guests")
        lab.up()
        if backend.server_argv is not None:
            proc, log = start_server(lab, backend, paths)
            state = record(server_pid=proc.pid, server_endpoint=backend.endpoint(paths), server_log=str(log))
            wait_server(lab, backend, paths, proc, log)
            seed_server(lab, backend, paths)
            _say(f"[lab] {backend.name} server up at {backend.endpoint(paths)} in {lab.underlay} (pid {proc.pid})"
                 + (", seed mapping loaded" if backend.seed else ""))
        for i in range(0, len(hosts), START_BATCH):  # a few at a time: they start in parallel, no CPU storm
            batch = hosts[i:i + START_BATCH]
            for h in batch:
                hdir = workdir / h.name
                hdir.mkdir(exist_ok=True)
                state = record()
                cfg = write_varpd_config(hdir / "varpd.toml", h, hosts_json=paths.hosts_json,
                                         state_dir=hdir / "state", sock=hdir / "varpd.sock", mode=mode,
                                         reconcile_interval=5.0, log_level="info", search=backend.name,
                                         properties=backend.properties(h, paths))
                lab.start_varpd(h, cfg)
            for h in batch:
                lab.wait_ready(h)
                lab.attach_guest(h)
                _say(f"[lab] {h.name}: underlay {h.underlay_ip}, varpd ready ({backend.name}, {mode}), "
                     f"guest {h.guest_mac} {h.guest_ip4} {h.guest_ip6}")
    except BaseException as exc:
        stop_server(state.server_pid, workdir)
        remove_namespaces(state.namespaces or ())
        if isinstance(exc, (LabError, OSError)):
            raise CliError(f"lab up failed, everything removed: {exc}") from None
        raise
    state = record()
    _say("[lab] checking the overlay: every guest pings every other guest, IPv4 and IPv6")
    probes, failed = reachability(lab, hosts)
    if failed:
        for probe in failed:
            _say(f"[lab] NO ANSWER: {probe}")
        _say(f"[lab] FAILED: {len(failed)} of {probes} pings unanswered; the lab is left up for inspection "
             f"(logs under {workdir}); `varpd lab down` removes it")
        return 1
    _say(f"[lab] overlay works: {probes} of {probes} guest-to-guest pings answered "
         f"({len(hosts)} guests, IPv4 and IPv6)")
    g1, g2 = hosts[0], hosts[1 % len(hosts)]
    lines = [
        f"[lab] up: {len(hosts)} hosts, backend {backend.name}, mapping {paths.hosts_json}, "
        f"logs and sockets under {workdir}",
        f"  varpd lab exec {g1.name}-guest ping -c3 {g2.guest_ip4}",
        f"  varpd lab exec {g1.name}-guest ping -6 -c3 {g2.guest_ip6}%eth0",
        f"  varpd --socket {workdir / g1.name / 'varpd.sock'} show-overlay -t vx23",
    ]
    if backend.name == "etcd":
        lines.append(f"  varpd lab exec underlay etcdctl --endpoints={backend.endpoint(paths)} get --prefix /varpd/")
    elif backend.name == "evpn":
        lines.append(f"  varpd lab exec underlay vtysh --vty_socket {workdir / 'evpn-rr'} -c 'show bgp l2vpn evpn'")
    elif backend.name != "files":
        lines.append(f"  {backend.name} server at {backend.endpoint(paths)}, reachable from every lab namespace")
    lines.append("  varpd lab status; varpd lab down")
    return "\n".join(lines)


def _legacy_namespaces(prefix: str) -> list[str]:
    """For a lab.json written before namespaces were recorded: only names of the lab's own pattern."""
    pattern = re.compile(re.escape(prefix) + r"(underlay|host\d+(-guest)?)")
    return [ns for ns in list_namespaces(prefix) if pattern.fullmatch(ns)]


def _remove_files(workdir: Path, state: LabState) -> None:
    for name in state.files:
        if name in ("", ".", "..") or "/" in name or name == STATE_FILE:
            continue  # a name from lab.json never leads out of the lab directory
        path = workdir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    (workdir / STATE_FILE).unlink(missing_ok=True)
    if state.made_dir:
        try:
            workdir.rmdir()  # only if empty: what someone else put there stays
        except OSError:
            pass


def down(args: argparse.Namespace) -> str:
    workdir = Path(args.dir).resolve()
    if not workdir.exists():
        return f"[lab] no lab was up (no {workdir})"
    state = LabState.load(workdir)
    if state is None:
        raise CliError(f"{workdir} is not a lab directory (no readable {STATE_FILE}): nothing removed")
    stopped = stop_server(state.server_pid, workdir)
    names = state.namespaces if state.namespaces is not None else _legacy_namespaces(args.prefix)
    removed = remove_namespaces(names)
    _remove_files(workdir, state)
    server = f", stopped the {state.backend} server" if stopped else ""
    return f"[lab] removed {len(removed)} namespaces{server}" if removed else f"[lab] no lab was up{server}"


def _server_line(args: argparse.Namespace) -> str:
    state = LabState.load(args.dir)
    if state is None:
        return f"backend: unknown (no {Path(args.dir) / STATE_FILE})"
    if state.server_pid is None:
        return f"backend: {state.backend} ({state.mode}), no server"
    alive = pid_alive(state.server_pid, Path(args.dir).resolve())
    return (f"backend: {state.backend} ({state.mode}), server {state.server_endpoint} pid {state.server_pid} "
            f"{'alive' if alive else 'DEAD'}")


def status(args: argparse.Namespace) -> str:
    names = list_namespaces(args.prefix)
    if not names:
        return "[lab] no lab is up"
    lines = [_server_line(args), f"{'NAMESPACE':<28} VARPD"]
    for ns in sorted(names):
        host = ns[len(args.prefix):]
        sock = Path(args.dir) / host / "varpd.sock"
        state = "--"
        if sock.exists():
            try:
                code, body = http_get(sock, "/v1/overlays")
                state = ", ".join(f"{o['name']} {o['status']} {o['mode']}" for o in body) if code == 200 else f"HTTP {code}"
            except OSError as exc:
                state = f"not answering ({exc.__class__.__name__})"
        lines.append(f"{ns:<28} {state}")
    return "\n".join(lines)


def exec_(args: argparse.Namespace) -> int:
    ns = args.namespace if args.namespace.startswith(args.prefix) else args.prefix + args.namespace
    if ns not in list_namespaces(args.prefix):
        raise CliError(f"no lab namespace {ns!r} (see `varpd lab status`)")
    if not args.cmd:
        raise CliError("nothing to run")
    return subprocess.call(["ip", "netns", "exec", ns, *args.cmd], stdin=sys.stdin)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    lab = sub.add_parser("lab", help="a multi-host overlay lab on this machine (network namespaces)",
                         description="Build, inspect and remove a lab: hosts as network namespaces on an underlay "
                                     "bridge (192.0.2.0/24), each running varpd with the seed's mapping (from a "
                                     "hosts.json, or from an etcd, HTTP or SVP server the lab runs in its "
                                     "underlay namespace), each with a guest namespace whose VNIC has the seed's "
                                     "MAC. Needs root.")
    lab.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"namespace name prefix (default {DEFAULT_PREFIX})")
    lab.add_argument("--dir", default=DEFAULT_DIR, help=f"where configs, logs and sockets go (default {DEFAULT_DIR})")
    verbs = lab.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = verbs.add_parser("up", help="build the lab and start a varpd per host",
                         description="Build the lab and start one varpd per host, then ping every guest from every "
                                     "other guest (IPv4 and IPv6) and print the result; exits 1 if one does not "
                                     "answer (the lab stays up to be inspected). Needs ip and bridge (Debian "
                                     "iproute2) and ping (iputils-ping). Prints how to reach the guests. "
                                     "With --backend etcd, http, svp or evpn the lab first starts that backend's server "
                                     "(etcd, `varpd mapping-server`, `varpd svp-server` or an FRR bgpd route "
                                     "reflector) in its underlay namespace "
                                     f"at {SERVER_IP} with the seed mapping; `lab down` stops it.")
    p.add_argument("--hosts", type=int, default=3, choices=range(2, 51), metavar="N", help="number of hosts (2-50, default 3)")
    p.add_argument("--mode", default=None, choices=["push", "on-demand"],
                   help="resolution mode of every overlay (default: push for files and etcd, on-demand for "
                        "backends that cannot list their mapping)")
    p.add_argument("--backend", default="files", choices=list(BACKENDS),
                   help="mapping backend of every varpd (default files): "
                        + "; ".join(f"{b.name}: {b.summary}" for b in BACKENDS.values())
                        + f". Servers run in the underlay namespace at {SERVER_IP}")
    p.add_argument("--underlay", default="ipv4", choices=["ipv4", "ipv6"],
                   help="the hosts' underlay: ipv4 (192.0.2.N/24, default) or ipv6 (2001:db8::N/64: hosts.json "
                        "ip and vxlan/listen_ip in IPv6; with --backend files)")
    p.set_defaults(func=up)
    p = verbs.add_parser("down", help="stop the daemons and remove every namespace and link of the lab",
                         description="Stop the lab's mapping server and daemons and remove what `lab up` recorded in "
                                     "--dir/lab.json: the namespaces it made (and so every link), the files it added "
                                     "to --dir, and --dir itself if it made it and nothing else is left there. A --dir "
                                     "without lab.json is refused and left untouched.")
    p.set_defaults(func=down)
    p = verbs.add_parser("status", help="list the lab's namespaces and each varpd's overlays",
                         description="Show the lab's backend and whether its server is alive, list its namespaces "
                                     "and the status of each host's varpd.")
    p.set_defaults(func=status)
    p = verbs.add_parser("exec", help="run a command in a lab namespace, e.g. host1-guest",
                         description="Run a command inside a lab namespace (host1, host1-guest, underlay, ...).")
    p.add_argument("namespace", help="namespace name, with or without the lab prefix")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="the command and its arguments")
    p.set_defaults(func=exec_)
