"""`varpd lab`: a multi-host overlay on this machine, hosts and guests as network namespaces.

Each host namespace runs a real varpd with the files backend and the seed's
hosts.json; each guest namespace is a VM whose VNIC has the seed's MAC.
Everything made lives inside namespaces named with the lab prefix, so
`lab down` removes it all by removing them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from varpd.cli.client import CliError
from varpd.lab import Lab, LabError, cleanup, http_get, seed_hosts, write_hosts_json, write_varpd_config
from varpd.lab.topology import list_namespaces

DEFAULT_DIR = "/run/varpd-lab"
DEFAULT_PREFIX = "vl-"


def _say(msg: str) -> None:
    print(msg, flush=True)


def up(args: argparse.Namespace) -> str:
    if list_namespaces(args.prefix):
        raise CliError(f"a lab with prefix {args.prefix!r} is already up: `varpd lab down` first")
    hosts = seed_hosts(args.hosts)
    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    hosts_json = workdir / "hosts.json"
    write_hosts_json(hosts_json, hosts)
    lab = Lab(hosts, prefix=args.prefix)
    try:
        _say(f"[lab] building underlay {args.prefix}underlay and {len(hosts)} hosts with guests")
        lab.up()
        for h in hosts:
            hdir = workdir / h.name
            hdir.mkdir(exist_ok=True)
            cfg = write_varpd_config(hdir / "varpd.toml", h, hosts_json=hosts_json, state_dir=hdir / "state",
                                     sock=hdir / "varpd.sock", mode=args.mode, reconcile_interval=5.0,
                                     log_level="info")
            lab.start_varpd(h, cfg)
            lab.wait_ready(h)
            lab.attach_guest(h)
            _say(f"[lab] {h.name}: underlay {h.underlay_ip}, varpd ready ({args.mode}), guest {h.guest_mac} "
                 f"{h.guest_ip4} {h.guest_ip6}")
    except (LabError, OSError) as exc:
        cleanup(args.prefix)
        raise CliError(f"lab up failed, everything removed: {exc}") from None
    g1, g2 = hosts[0], hosts[1 % len(hosts)]
    return "\n".join([
        f"[lab] up: {len(hosts)} hosts, mapping {hosts_json}, logs and sockets under {workdir}",
        f"  varpd lab exec {g1.name}-guest ping -c3 {g2.guest_ip4}",
        f"  varpd lab exec {g1.name}-guest ping -6 -c3 {g2.guest_ip6}%eth0",
        f"  varpd --socket {workdir / g1.name / 'varpd.sock'} show-overlay -t vx23",
        "  varpd lab status; varpd lab down",
    ])


def down(args: argparse.Namespace) -> str:
    removed = cleanup(args.prefix)
    shutil.rmtree(args.dir, ignore_errors=True)
    return f"[lab] removed {len(removed)} namespaces" if removed else "[lab] no lab was up"


def status(args: argparse.Namespace) -> str:
    names = list_namespaces(args.prefix)
    if not names:
        return "[lab] no lab is up"
    lines = [f"{'NAMESPACE':<28} VARPD"]
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
                                     "bridge (192.0.2.0/24), each running varpd with the seed's hosts.json, each "
                                     "with a guest namespace whose VNIC has the seed's MAC. Needs root.")
    lab.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"namespace name prefix (default {DEFAULT_PREFIX})")
    lab.add_argument("--dir", default=DEFAULT_DIR, help=f"where configs, logs and sockets go (default {DEFAULT_DIR})")
    verbs = lab.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = verbs.add_parser("up", help="build the lab and start a varpd per host",
                         description="Build the lab and start one varpd per host; prints how to reach the guests.")
    p.add_argument("--hosts", type=int, default=3, choices=range(2, 51), metavar="N", help="number of hosts (2-50, default 3)")
    p.add_argument("--mode", default="push", choices=["push", "on-demand"],
                   help="resolution mode of every overlay (default push)")
    p.add_argument("--backend", default="files", choices=["files"],
                   help="mapping backend of the lab (only files so far; see the README for etcd and http labs)")
    p.set_defaults(func=up)
    p = verbs.add_parser("down", help="stop the daemons and remove every namespace and link of the lab",
                         description="Stop the lab's daemons and remove every namespace (and so every link) it made.")
    p.set_defaults(func=down)
    p = verbs.add_parser("status", help="list the lab's namespaces and each varpd's overlays",
                         description="List the lab's namespaces and the status of each host's varpd.")
    p.set_defaults(func=status)
    p = verbs.add_parser("exec", help="run a command in a lab namespace, e.g. host1-guest",
                         description="Run a command inside a lab namespace (host1, host1-guest, underlay, ...).")
    p.add_argument("namespace", help="namespace name, with or without the lab prefix")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="the command and its arguments")
    p.set_defaults(func=exec_)
