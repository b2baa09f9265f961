"""`varpd`: the daemon and its dladm-shaped control commands."""

from __future__ import annotations

import argparse
import os
import sys

from varpd import __version__
from varpd.cli import overlay
from varpd.cli.client import CliError

DEFAULT_SOCKET = "/run/varpd/varpd.sock"


def _daemon(args: argparse.Namespace) -> int:
    from varpd.daemon.main import run

    return run(args.config, args.daemon_socket, args.state_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="varpd",
        description="Overlay network control plane for Linux VXLAN, modelled on illumos varpd. "
                    "`varpd daemon` runs the daemon; the other commands talk to it over its unix socket.",
    )
    parser.add_argument("--version", action="version", version=f"varpd {__version__}")
    parser.add_argument("--socket", default=os.environ.get("VARPD_SOCKET", DEFAULT_SOCKET),
                        help=f"the daemon's control socket (default: $VARPD_SOCKET or {DEFAULT_SOCKET})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("daemon", help="run the daemon in the foreground",
                       description="Run the daemon: create and program the configured and saved overlays, serve "
                                   "the admin API on a unix socket, stop on SIGTERM (leaving kernel state in place).")
    p.add_argument("-c", "--config", help="TOML or YAML configuration file (see configs/)")
    p.add_argument("--socket", dest="daemon_socket", help="override the config's control socket path")
    p.add_argument("--state-dir", help="override the config's state directory")
    p.set_defaults(func=_daemon)

    overlay.add_parsers(sub)
    try:
        from varpd.cli import lab
    except ImportError:  # pragma: no cover - the lab ships with the package
        pass
    else:
        lab.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except CliError as exc:
        print(f"varpd: {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if isinstance(result, int):
        return result
    if result:
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def console() -> None:
    """The console script: exit with main()'s status."""
    sys.exit(main())
