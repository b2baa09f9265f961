"""`varpd svp-server`: the reference server of the svp backend (Triton portolan's SVP protocol)."""

from __future__ import annotations

import argparse
import os
import ssl

from varpd.cli.client import CliError
from varpd.cli.arguments import VNI_HELP, vni
from varpd.cli.serving import listen_address, serve_until_signalled, server_tls, setup_logging, until_signalled


def _source_props(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """(backend, properties) of the mapping source named on the command line."""
    if bool(args.hosts) == bool(args.etcd):
        raise CliError("give exactly one mapping source: --hosts FILE or --etcd ENDPOINTS")
    if args.hosts:
        return "files", {"files/config": os.path.abspath(args.hosts),
                         "files/reload_interval": str(args.reload_interval)}
    props = {"etcd/endpoints": args.etcd, "etcd/prefix": args.etcd_prefix}
    for name in ("ca", "cert", "key"):
        if getattr(args, f"etcd_{name}"):
            props[f"etcd/{name}"] = os.path.abspath(getattr(args, f"etcd_{name}"))
    return "etcd", props


async def _serve(args: argparse.Namespace, source: tuple[str, dict[str, str]], ssl_ctx: ssl.SSLContext | None) -> None:
    from varpd.svp_server import SvpServer
    from varpd.svp_server.server import make_source

    server = SvpServer(args.vni, source=make_source(args.vni, *source), ssl=ssl_ctx,
                       max_connections=args.max_connections, idle_timeout=args.idle_timeout)
    await server.start(*args.listen)
    try:
        await until_signalled()
    finally:
        await server.stop()


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    if args.max_connections < 1:
        raise CliError(f"--max-connections {args.max_connections}: at least 1")
    if not args.idle_timeout > 0:
        raise CliError(f"--idle-timeout {args.idle_timeout:g}: more than 0 seconds")
    ssl_ctx = server_tls(args.cert, args.key)
    source = _source_props(args)  # a bad command line is refused before anything starts
    return serve_until_signalled(_serve(args, source, ssl_ctx), args.listen)


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "svp-server", help="serve a hosts.json over SVP for the svp backend",
        description="The reference SVP server (Triton portolan's protocol) of the svp backend: answers VL2 "
                    "(MAC → underlay) and VL3 (overlay IP → MAC and underlay) lookups for one VNI from a "
                    "hosts.json (re-read when it changes) or an etcd cluster (followed by its watch), and keeps "
                    "each host's shootdown log: a VL2 record when a MAC moves or disappears, a VL3 record when an "
                    "overlay IP changes owner (or is given a new one within 10 minutes of losing its last).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--hosts", metavar="FILE", help="hosts.json to serve (overlay_files(5) format)")
    src.add_argument("--etcd", metavar="ENDPOINTS",
                     help="serve the mapping kept in etcd (comma-separated endpoints, as etcd/endpoints)")
    p.add_argument("--etcd-prefix", default="/varpd", metavar="PREFIX",
                   help="key prefix of the mapping in etcd (default /varpd, as etcd/prefix)")
    p.add_argument("--etcd-ca", metavar="PEM", help="CA bundle verifying etcd (TLS)")
    p.add_argument("--etcd-cert", metavar="PEM", help="client certificate for etcd (TLS)")
    p.add_argument("--etcd-key", metavar="PEM", help="client key for etcd (TLS)")
    p.add_argument("--vni", type=vni, required=True, metavar="VNI",
                   help=f"the overlay's VNI ({VNI_HELP}; the vnetid of every request)")
    p.add_argument("--listen", type=listen_address, default=("127.0.0.1", 1296), metavar="ADDR:PORT",
                   help="address and port to listen on (default 127.0.0.1:1296)")
    p.add_argument("--reload-interval", type=int, default=1, metavar="SECONDS",
                   help="how often --hosts is checked for changes, whole seconds (default 1, 0: never)")
    p.add_argument("--max-connections", type=int, default=1024, metavar="N",
                   help="connections open at once; more are closed at once (default 1024)")
    p.add_argument("--idle-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="close a connection that sends no request for this long (default 120)")
    p.add_argument("--cert", metavar="PEM", help="serve over TLS with this certificate chain")
    p.add_argument("--key", metavar="PEM", help="the private key of --cert")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)
