"""Runs the admin app inside the daemon's own event loop (AppRunner + UnixSite)."""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

from varpd.admin.app import make_app


class AdminServer:
    def __init__(self, service, socket_path: str, tcp: tuple[str, int] | None = None) -> None:
        self.service = service
        self.socket_path = Path(socket_path)
        self.tcp = tcp
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        # a daemon killed with -9 leaves its socket behind: a new one must not fail on it
        self.socket_path.unlink(missing_ok=True)
        self._runner = web.AppRunner(make_app(self.service), access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.socket_path)).start()
        os.chmod(self.socket_path, 0o660)
        if self.tcp is not None:
            await web.TCPSite(self._runner, *self.tcp).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.socket_path.unlink(missing_ok=True)
