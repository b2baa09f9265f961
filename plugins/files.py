"""files: the mapping lives in a hosts.json (overlay_files(5)), reloaded when it changes.

Properties:

- ``files/config`` (string, required): absolute path of the hosts.json.
- ``files/watch`` (``inotify`` or ``poll``, default inotify): how changes are seen.
  inotify (one instance for the whole daemon, `varpd_plugins.file_watch`) reloads
  within milliseconds of an edit and costs nothing while the file is quiet; where
  it cannot be used (no inotify, out of instances or watches) the file is polled,
  as it must be on network filesystems, whose remote writes inotify never sees.
- ``files/reload_interval`` (seconds, fractions allowed, default 1; 0 disables
  reloading): how often the file is polled when it is polled.
- ``files/max_size`` (uint bytes, default 256 MiB: a million records): a larger
  file is refused, as is anything but a regular file (a FIFO blocked the reload
  thread forever, /dev/zero was read until the OOM killer came).

Better than the original, which never reloads: the file is watched (editors
that write a new file and rename it over, in-place rewrites, delete and
re-create, a replaced directory: each edit is one reload), parsed off the event
loop, and only the difference reaches the daemon (`replace_mapping`).  A file
closed after writing or renamed into place is read at once; a creation, deletion
or modification still in progress is looked at once it has settled for
`SETTLE` seconds, and re-read only if its (inode, mtime_ns, size) moved.  A bad or missing file keeps the last
good mapping in force, logs one error line and marks the overlay DEGRADED; the
next good file clears it.  A bad file at start is fatal (ConfigError): the
overlay cannot run without a mapping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from varpd.backend.base import MappingBackend, OverlayContext
from varpd.backend.errors import ConfigError, PropertyError
from varpd.backend.properties import PropertySpec, PropType, Protection
from varpd.config.hosts import MAX_SIZE, parse_hosts
from varpd.config.hosts_apart import load_hosts_apart
from varpd.config.reading import read_text
from varpd.model import Mapping, MappingChange
from varpd_plugins.file_watch import CHANGED, WRITTEN, Subscription, watch_file

_DIFF_ON_LOOP = 20_000  # records: a smaller diff takes < ~50 ms; a thread hop would only add latency to edits
log = logging.getLogger(__name__)

SETTLE = 0.2  # s without events before a file created, deleted or modified (not closed) is looked at

# (inode, mtime_ns, size) of the file, or None when it cannot be stat'ed.
Stamp = tuple[int, int, int] | None

# A file modified this recently may be modified again within the same timestamp tick
# without its stamp changing ("racy git"): such a file is re-read on the next poll.
_RACY_NS = 1_000_000_000

# From this size on (about 60k records) a file is parsed in a child process: at a million
# records that left the daemon ~75 MB smaller and its peak ~300 MB lower (varpd.config.hosts_apart);
# below it the child's start (0.3-0.5 s) would cost more than it saves, and an edit of a small
# file reaches the kernel in milliseconds.
APART_SIZE = 8 * 1024 * 1024


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class _LoadFailed(Exception):
    def __init__(self, stamp: Stamp, error: ConfigError) -> None:
        super().__init__(str(error))
        self.stamp = stamp
        self.error = error


def _load(path: Path, max_size: int, previous: Mapping | None = None) -> tuple[Stamp, Mapping]:
    """Read and parse `path` (in a worker thread); the stamp is of the very file that was read.

    A file of APART_SIZE bytes or more is parsed by a child process (varpd.config.hosts_apart:
    the daemon never holds its JSON), sharing the records `previous` has unchanged."""
    before = _stamp(path)
    if before is not None and before[2] >= APART_SIZE:
        try:
            return load_hosts_apart(path, max_size, previous)
        except ConfigError as exc:
            raise _LoadFailed(before, exc) from None  # stat'ed before the read: a later write is re-read
    try:
        st, text = read_text(path, max_size)
    except ConfigError as exc:
        raise _LoadFailed(_stamp(path), exc) from None
    stamp: Stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    try:
        return stamp, parse_hosts(text, str(path))
    except ConfigError as exc:
        raise _LoadFailed(stamp, exc) from None


class FilesBackend(MappingBackend):
    """A DYNAMIC, enumerable backend serving the records of one hosts.json."""

    name = "files"
    properties = (
        PropertySpec("files/config", PropType.STRING, Protection.REQUIRED,
                     description="absolute path of the hosts.json mapping"),
        PropertySpec("files/reload_interval", PropType.SECONDS, Protection.WRITE, default=1, maximum=3600,
                     description="seconds between polls of the file when it is polled (0: never reload)"),
        PropertySpec("files/max_size", PropType.UINT, Protection.WRITE, default=MAX_SIZE, minimum=2,
                     maximum=1 << 32, description="bytes a hosts.json may have; a larger one is refused"),
        PropertySpec("files/watch", PropType.STRING, Protection.WRITE, default="inotify", choices=("inotify", "poll"),
                     description="inotify: reload on every edit; poll: stat the file every reload_interval"),
    )

    def __init__(self, ctx: OverlayContext, props: dict[str, Any]) -> None:
        super().__init__(ctx, props)
        raw = props.get("files/config")
        if raw is None or str(raw) == "":
            raise PropertyError("files/config", "unset required property")
        path = Path(str(raw))
        if not path.is_absolute():
            raise PropertyError("files/config", f"{raw!r} is not an absolute path")
        self.path = path
        self.interval: float = self.properties[1].parse(props.get("files/reload_interval", 1))
        self.max_size: int = self.properties[2].parse(props.get("files/max_size", MAX_SIZE))
        self.watch_mode: str = self.properties[3].parse(props.get("files/watch", "inotify"))
        self._stamp: Stamp = None
        self._racy = False
        self._task: asyncio.Task | None = None  # the poller, when polling
        self._subscription: Subscription | None = None  # the inotify watch, when watching
        self._reloading: asyncio.Task | None = None
        self._again = False  # written again while a reload was reading
        self._settle: asyncio.TimerHandle | None = None
        self._missing_seen = False
        self._lock = asyncio.Lock()
        self.reloads = 0

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Load the file (ConfigError if it is bad or missing) and start watching it."""
        if self._task is not None:
            return  # already started
        try:
            stamp, mapping = await asyncio.to_thread(_load, self.path, self.max_size)
        except _LoadFailed as failed:
            raise failed.error from None
        self._remember(stamp)
        self.replace_mapping(mapping)  # nothing is emitted unless listeners were added before start
        self.set_degraded(None)
        log.info("files=%s event=loaded records=%d", self.path, len(mapping))
        if self.interval <= 0:
            return
        if self.watch_mode == "inotify":
            self._subscription = watch_file(self.path, self._on_file_event)
        if self._subscription is not None:
            self._look_later(0)  # an edit between the read and the watch
        else:
            self._task = asyncio.get_running_loop().create_task(self._poll(), name=f"files-poll:{self.path}")

    async def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        if self._settle is not None:
            self._settle.cancel()
            self._settle = None
        for task in (self._task, self._reloading):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._task = self._reloading = None

    # -- reloading ------------------------------------------------------------------
    async def reload(self) -> MappingChange:
        """Re-read the file now and apply the difference.

        A bad or missing file raises ConfigError, changes nothing, and marks the
        backend degraded (one error line logged); a good one clears that.
        """
        async with self._lock:
            try:
                stamp, newer = await asyncio.to_thread(_load, self.path, self.max_size, self.mapping)
            except _LoadFailed as failed:
                self._remember(failed.stamp)
                self._fail(f"{failed.error}; keeping the last good mapping")
                raise failed.error from None
            self._remember(stamp)
            # the diff walks both tables: 2.7 s at 1M records, off the loop like the parse
            # (the mapping changes only here, under this lock, so it is still the one diffed)
            diff = await asyncio.to_thread(self.mapping.diff, newer) if len(newer) > _DIFF_ON_LOOP else None
            change = self.replace_mapping(newer, diff)
            self.reloads += 1
            if change:
                log.info("files=%s event=reloaded records=%d upserted=%d removed=%d",
                         self.path, len(newer), len(change.upserted), len(change.removed))
            if self.degraded is not None:
                log.info("files=%s event=recovered records=%d", self.path, len(newer))
            self.set_degraded(None)
            return change

    def changed(self) -> bool:
        """Whether the file may differ from what was last read (cheap: one stat)."""
        return self._racy or _stamp(self.path) != self._stamp

    def _remember(self, stamp: Stamp) -> None:
        self._stamp = stamp
        self._racy = stamp is not None and time.time_ns() - stamp[1] < _RACY_NS

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.changed():
                await self._reload_logged()

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except ConfigError:
            pass  # logged and marked degraded by reload()
        except Exception:  # never let the watcher die: the overlay would silently stop following the file
            log.exception("files=%s event=reload-crashed", self.path)

    # -- inotify ------------------------------------------------------------------------
    def _on_file_event(self, kind: str) -> None:
        if kind == WRITTEN:
            self._reload_now()
        else:  # CHANGED settles first; RESCAN looks at once
            self._look_later(SETTLE if kind == CHANGED else 0)

    def _reload_now(self) -> None:
        if self._settle is not None:
            self._settle.cancel()
            self._settle = None
        if self._reloading is not None:
            self._again = True  # it may have read the file before this write: read it once more after
            return
        self._reloading = asyncio.get_running_loop().create_task(self._reload_until_read())

    async def _reload_until_read(self) -> None:
        try:
            while True:
                self._again = False
                await self._reload_logged()
                if not self._again:
                    return
        finally:
            self._reloading = None

    def _look_later(self, delay: float) -> None:
        if self._settle is not None:
            self._settle.cancel()
        self._settle = asyncio.get_running_loop().call_later(delay, self._look)

    def _look(self) -> None:
        """Reload if the file is not the one last read; a file gone is given SETTLE to come back."""
        self._settle = None
        if self._reloading is not None:
            return  # that reload reads whatever is there now
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        if stamp is None and not self._missing_seen:
            self._missing_seen = True  # a directory re-made before its file, an rm before the cp
            self._look_later(SETTLE)
            return
        self._missing_seen = False
        self._reload_now()

    def _fail(self, message: str) -> None:
        if message != self.degraded:
            log.error("files=%s event=reload-failed error=%s", self.path, message)
        self.set_degraded(message)
