"""`varpd`: the daemon and its dladm-shaped control commands."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from varpd import __version__
from varpd.cli import overlay
from varpd.cli.client import CliError

DEFAULT_SOCKET = "/run/varpd/varpd.sock"
# one module per noun beyond the overlay commands, each with add_parsers(subparsers)
NOUNS = ("lab", "register", "mapping_server", "svp_server", "snoop", "vnic")


def _daemon(args: argparse.Namespace) -> int:
    from varpd.daemon.main import run

    # `varpd --socket X daemon` means the same as `varpd daemon --socket X`
    # --log-format only when given: the config's daemon.log_format applies otherwise
    extra = {"log_format_override": args.log_format} if args.log_format else {}
    return run(args.config, args.daemon_socket or args.socket_given, args.state_dir, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="varpd",
        description="Overlay network control plane for Linux VXLAN, modelled on illumos varpd. "
                    "`varpd daemon` runs the daemon; the other commands talk to it over its unix socket.",
    )
    parser.add_argument("--version", action="version", version=f"varpd {__version__}")
    parser.add_argument("--socket", metavar="PATH", default=None,
                        help=f"the daemon's control socket (default: $VARPD_SOCKET or {DEFAULT_SOCKET})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("daemon", help="run the daemon in the foreground",
                       description="Run the daemon: create and program the configured and saved overlays, serve "
                                   "the admin API on a unix socket, stop on SIGTERM (leaving kernel state in place).")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="TOML (.toml) or YAML (.yaml, .yml) configuration file; without it the defaults apply "
                        "and only saved overlays are started")
    p.add_argument("--socket", dest="daemon_socket", metavar="PATH",
                   help="serve the admin API on this unix socket instead of the config's daemon.socket")
    p.add_argument("--state-dir", metavar="DIR",
                   help="keep saved overlays in DIR instead of the config's daemon.state_dir")
    p.add_argument("--log-format", choices=["kv", "json"],
                   help="log lines on stderr as key=value text (kv) or one JSON object per line (json) instead "
                        "of the config's daemon.log_format (default kv)")
    p.set_defaults(func=_daemon)

    overlay.add_parsers(sub)
    for name in NOUNS:
        if importlib.util.find_spec(f"varpd.cli.{name}") is not None:
            importlib.import_module(f"varpd.cli.{name}").add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.socket_given = args.socket
    if args.socket is None:
        args.socket = os.environ.get("VARPD_SOCKET", DEFAULT_SOCKET)
    try:
        result = args.func(args)
    except CliError as exc:
        print(f"varpd: {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - still one line, as every other error
        print(f"varpd: {args.command}: unexpected error: {type(exc).__name__}: {' '.join(str(exc).split())}",
              file=sys.stderr)
        return 1
    if isinstance(result, int):
        return result
    if result:
        print(result)
    return 0


def console() -> None:
    """The console script: exit with main()'s status."""
    sys.exit(main())


if __name__ == "__main__":
    console()
