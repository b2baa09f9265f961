"""Runs the admin app inside the daemon's own event loop: AppRunner + a unix socket (+ TCP if asked)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Iterable

from aiohttp import web

from varpd.admin.app import Service, make_app
from varpd.config.daemon import ADMIN_ALLOW_DEFAULT

SOCKET_MODE = 0o660


class AdminServer:
    """The admin API on `socket_path` (mode 0660), and on `tcp` (host, port) only when configured.

    TCP clients must come from `allow` (default: loopback); the socket's file mode guards the rest.
    """

    def __init__(self, service: Service, socket_path: str, tcp: tuple[str, int] | None = None,
                 *, allow: Iterable = ADMIN_ALLOW_DEFAULT, access_log: bool = False) -> None:
        self.service = service
        self.socket_path = Path(socket_path)
        self.tcp = tcp
        self.allow = tuple(allow)
        self.access_log = access_log
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        runner_kwargs = {} if self.access_log else {"access_log": None}
        runner = web.AppRunner(make_app(self.service, self.allow), **runner_kwargs)
        await runner.setup()
        try:
            await web.SockSite(runner, self._bind_unix()).start()
            if self.tcp is not None:
                await web.TCPSite(runner, *self.tcp).start()
        except BaseException:
            await runner.cleanup()
            self.socket_path.unlink(missing_ok=True)
            raise
        self._runner = runner

    def _bind_unix(self) -> socket.socket:
        """Bind and chmod before listening, so the socket is never reachable with a looser mode.

        (web.UnixSite binds and listens in one step and could only be chmod-ed afterwards.)
        A daemon killed with -9 leaves its socket file behind: a new one replaces it.
        """
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.socket_path))
            os.chmod(self.socket_path, SOCKET_MODE)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def stop(self) -> None:
        """Close the sites and remove the socket file; safe to call twice or before start()."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            self.socket_path.unlink(missing_ok=True)
