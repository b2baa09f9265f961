"""files: the mapping lives in a hosts.json (overlay_files(5)), reloaded when it changes.

Better than the original, which never reloads: the file is polled (inode,
mtime_ns, size: robust to editors that write a new file and rename it over),
parsed off the event loop, and only the difference reaches the kernel.  A bad
file keeps the last good mapping in force and marks the overlay DEGRADED.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from varpd.backend.base import MappingBackend, OverlayContext
from varpd.backend.errors import ConfigError, PropertyError
from varpd.backend.properties import PropertySpec, PropType, Protection
from varpd.config.hosts import load_hosts
from varpd.model import MappingChange

log = logging.getLogger(__name__)

_Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> _Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class FilesBackend(MappingBackend):
    name = "files"
    properties = (
        PropertySpec("files/config", PropType.STRING, Protection.REQUIRED,
                     description="absolute path of the hosts.json mapping"),
        PropertySpec("files/reload_interval", PropType.UINT, Protection.WRITE, default=1, maximum=3600,
                     description="seconds between checks of the file for changes (0: never reload)"),
    )

    def __init__(self, ctx: OverlayContext, props: dict[str, Any]) -> None:
        super().__init__(ctx, props)
        path = Path(str(props["files/config"]))
        if not path.is_absolute():
            raise PropertyError("files/config", f"{path} is not an absolute path")
        self.path = path
        self.interval = int(props.get("files/reload_interval", 1))
        self._stamp: _Stamp = None
        self._task: asyncio.Task | None = None
        self.reloads = 0

    async def start(self) -> None:
        self._stamp = _stamp(self.path)
        self.mapping = await asyncio.to_thread(load_hosts, self.path)
        log.info("files=%s event=loaded records=%d", self.path, len(self.mapping))
        if self.interval and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def reload(self) -> MappingChange:
        """Re-read the file now; a bad file raises ConfigError and changes nothing."""
        self._stamp = _stamp(self.path)
        newer = await asyncio.to_thread(load_hosts, self.path)
        change = self.replace_mapping(newer)
        self.reloads += 1
        log.info("files=%s event=reloaded records=%d upserted=%d removed=%d",
                 self.path, len(newer), len(change.upserted), len(change.removed))
        return change

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                continue
            if stamp is None:
                self._stamp = None
                self._fail(f"{self.path}: file is missing; keeping the last good mapping")
                continue
            try:
                await self.reload()
            except ConfigError as exc:
                self._fail(f"{exc}; keeping the last good mapping")
            else:
                self.set_degraded(None)

    def _fail(self, message: str) -> None:
        if message != self.degraded:
            log.error("files=%s event=reload-failed error=%s", self.path, message)
        self.set_degraded(message)
