"""What the reference servers' commands share (`mapping-server`, `svp-server`): --listen, --cert/--key,
--log-level, serving until a signal, and one-line errors."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import ssl
from typing import Coroutine

from varpd.cli.client import CliError


def listen_address(text: str) -> tuple[str, int]:
    """argparse type of --listen: `ADDR:PORT` or `[V6]:PORT` (an empty ADDR is 0.0.0.0)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ADDRESS:PORT, e.g. 127.0.0.1:8080 or [::1]:8080")
    host = host.strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise argparse.ArgumentTypeError(f"{text!r}: {host!r} is not an IP address") from None
    return host, int(port)


def server_tls(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The server-side TLS context of --cert/--key (None without them); CliError naming the options."""
    if bool(cert) != bool(key):
        raise CliError("--cert and --key go together")
    if not cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"--cert/--key: {exc}") from None
    return ctx


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def until_signalled() -> None:
    """Return on SIGINT or SIGTERM (the server's own cleanup runs after)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def serve_until_signalled(main: Coroutine, listen: tuple[str, int]) -> int:
    """Run a server's coroutine; a bad mapping or a busy address becomes one CliError line."""
    from varpd.backend.errors import BackendError

    try:
        asyncio.run(main)
    except BackendError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror or exc}") from None
    return 0
