"""Runs the admin app inside the daemon's own event loop: AppRunner + a unix socket (+ TCP if asked)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
from pathlib import Path
from typing import Iterable

from aiohttp import web

from varpd.admin.app import ADMIN_LISTENERS, Service, make_app
from varpd.admin.limits import (HEADER_TIMEOUT, AcceptErrorThrottle, ConnectionGate, GatedSite,
                                default_connection_limit)
from varpd.config.daemon import ADMIN_ALLOW_DEFAULT
from varpd.daemon.errors import SocketInUse

SOCKET_MODE = 0o660


class AdminServer:
    """The admin API on `socket_path` (mode 0660), and on `tcp` (host, port) only when configured.

    TCP clients must come from `allow` (default: loopback); the socket's file mode guards the rest.
    Each listener takes at most `max_connections` (default: from RLIMIT_NOFILE) and gives a client
    `header_timeout` s for its request headers (varpd.admin.limits).
    """

    def __init__(self, service: Service, socket_path: str, tcp: tuple[str, int] | None = None,
                 *, allow: Iterable = ADMIN_ALLOW_DEFAULT, access_log: bool = False,
                 max_connections: int | None = None, header_timeout: float = HEADER_TIMEOUT) -> None:
        self.service = service
        self.socket_path = Path(socket_path)
        self.tcp = tcp
        self.allow = tuple(allow)
        self.access_log = access_log
        limit = max_connections or default_connection_limit()
        self.gates = [ConnectionGate("unix", limit, header_timeout)]
        if tcp is not None:
            self.gates.append(ConnectionGate("tcp", limit, header_timeout))
        self.header_timeout = header_timeout
        self._runner: web.AppRunner | None = None
        self._throttle: AcceptErrorThrottle | None = None
        self._owned: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file this server bound

    async def start(self) -> None:
        runner_kwargs: dict = {"keepalive_timeout": self.header_timeout}
        if not self.access_log:
            runner_kwargs["access_log"] = None
        app = make_app(self.service, self.allow)
        app[ADMIN_LISTENERS] = self.gates
        runner = web.AppRunner(app, **runner_kwargs)
        await runner.setup()
        try:
            await GatedSite(runner, self._bind_unix(), self.gates[0]).start()
            if self.tcp is not None:
                await GatedSite(runner, _bind_tcp(*self.tcp), self.gates[1]).start()
        except BaseException:
            await runner.cleanup()
            self._unlink_own_socket()
            raise
        self._runner = runner
        loop = asyncio.get_running_loop()
        self._throttle = AcceptErrorThrottle(loop.get_exception_handler())
        loop.set_exception_handler(self._throttle)

    def _bind_unix(self) -> socket.socket:
        """Bind and chmod before listening, so the socket is never reachable with a looser mode.

        (web.UnixSite binds and listens in one step and could only be chmod-ed afterwards.)
        A daemon killed with -9 leaves its socket file behind: a new one replaces it.  A socket a
        live daemon answers on, or a path that is not a socket, is never replaced (SocketInUse).
        """
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_socket()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.socket_path))
            st = os.lstat(self.socket_path)
            self._owned = (st.st_dev, st.st_ino)
            os.chmod(self.socket_path, SOCKET_MODE)
        except BaseException:
            sock.close()
            self._unlink_own_socket()
            raise
        sock.setblocking(False)
        return sock

    def _remove_stale_socket(self) -> None:
        path = self.socket_path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUse(f"admin socket {path} exists and is not a socket: not replacing it "
                              "(remove it or set daemon.socket to another path)")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno != errno.ECONNREFUSED:  # anything but "nobody listens" may be a live daemon
                raise SocketInUse(f"admin socket {path} cannot be checked ({exc.strerror or exc}): "
                                  "not replacing it") from None
            path.unlink(missing_ok=True)  # left by a daemon that died: nobody listens on it
            return
        finally:
            probe.close()
        raise SocketInUse(f"admin socket {path} is in use by another running varpd: not starting a second one")

    def _unlink_own_socket(self) -> None:
        """Remove the socket file only if it is still the one this server bound."""
        owned, self._owned = self._owned, None
        try:
            st = os.lstat(self.socket_path)
        except OSError:
            return
        if owned == (st.st_dev, st.st_ino) and stat.S_ISSOCK(st.st_mode):
            self.socket_path.unlink(missing_ok=True)

    async def stop(self) -> None:
        """Close the sites and remove the socket file; safe to call twice or before start()."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            self._unlink_own_socket()
        if self._throttle is not None:
            asyncio.get_running_loop().set_exception_handler(self._throttle.previous)
            self._throttle = None


def _bind_tcp(host: str, port: int) -> socket.socket:
    """The TCP listener as web.TCPSite would make it (SO_REUSEADDR), as a socket for GatedSite."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=128)
    sock.setblocking(False)
    return sock
