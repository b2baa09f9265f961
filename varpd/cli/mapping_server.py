"""`varpd mapping-server`: the reference server of the HTTP backend (see docs/mapping-api.yaml)."""

from __future__ import annotations

import argparse
import logging
import ssl

from varpd.cli.client import CliError
from varpd.cli.arguments import VNI_HELP, vni
from varpd.cli.serving import listen_address, serve_until_signalled, server_tls, setup_logging, until_signalled
from varpd.config.secrets import read_token_file


async def _serve(args: argparse.Namespace, token: str | None, ssl_ctx: ssl.SSLContext | None) -> None:
    from aiohttp import web

    from varpd.mapping_server.app import make_app
    from varpd.mapping_server.store import MappingStore

    store = MappingStore(args.vni, hosts=args.hosts, writable=not args.read_only,
                         reload_interval=args.reload_interval)
    await store.start()  # a bad hosts file fails here, before listening
    app = make_app(store, token=token, keepalive=args.keepalive, manage_store=False)
    runner = web.AppRunner(app, shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    host, port = args.listen
    site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx, reuse_address=True)
    await site.start()
    scheme = "https" if ssl_ctx else "http"
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("varpd.mapping_server").info(
        "mapping-server event=listening url=%s://%s:%d vni=%d records=%d source=%s writable=%s auth=%s",
        scheme, shown, port, args.vni, len(store), args.hosts or "memory", not args.read_only,
        "bearer" if token else "none")
    try:
        await until_signalled()
    finally:
        await runner.cleanup()
        await store.stop()


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    if args.token and args.token_file:
        raise CliError("give --token or --token-file, not both")
    token = args.token
    if args.token_file:
        try:
            token = read_token_file(args.token_file)
        except ValueError as exc:
            raise CliError(f"--token-file {args.token_file}: {exc}") from None
    ssl_ctx = server_tls(args.cert, args.key)
    return serve_until_signalled(_serve(args, token, ssl_ctx), args.listen)


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "mapping-server", help="serve a mapping over HTTP for the http backend",
        description="The reference mapping server of the http backend: serves one overlay's mapping "
                    "(a hosts.json, re-read when it changes, or an in-memory table) with the API of "
                    "docs/mapping-api.yaml: GET/PUT/DELETE /v1/overlays/VNI/macs/MAC, GET /v1/overlays/VNI/ips/IP "
                    "and the server-sent events stream GET /v1/overlays/VNI/events. PUT and DELETE change the "
                    "in-memory table (with --hosts, until the file next changes).")
    p.add_argument("--hosts", metavar="FILE", help="hosts.json to serve (default: start with an empty table)")
    p.add_argument("--vni", type=vni, required=True, metavar="VNI",
                   help=f"the overlay's VNI ({VNI_HELP}; the {{vni}} of every URL)")
    p.add_argument("--listen", type=listen_address, default=("127.0.0.1", 8080), metavar="ADDR:PORT",
                   help="address and port to listen on (default 127.0.0.1:8080)")
    p.add_argument("--token", help="require this bearer token on every /v1/overlays request")
    p.add_argument("--token-file", metavar="FILE", help="read the bearer token from FILE")
    p.add_argument("--read-only", action="store_true", help="refuse PUT and DELETE (403)")
    p.add_argument("--cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    p.add_argument("--key", metavar="PEM", help="the private key of --cert")
    p.add_argument("--reload-interval", type=float, default=1.0, metavar="SECONDS",
                   help="how often --hosts is checked for changes (default 1, 0: never)")
    p.add_argument("--keepalive", type=float, default=15.0, metavar="SECONDS",
                   help="comment line sent on idle event streams (default 15)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log verbosity (default info)")
    p.set_defaults(func=run)
