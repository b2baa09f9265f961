"""One inotify watcher for every file the daemon follows (asyncinotify: no thread, no timer).

A file is followed through its directory, never through the file itself: an
editor that writes a new file and renames it over, a delete and re-create, an
in-place rewrite all happen to the directory entry.  The directory in turn is
followed by its path: when it is moved away or deleted (`mv conf conf.old; mv
conf.new conf`), the watch moves to the nearest existing ancestor until the path
is a directory again.  Each subscriber hears one of:

- ``WRITTEN``: the file was closed after writing, or renamed into place: read it now;
- ``CHANGED``: it was created, deleted, modified or touched: a writer may still be
  at work, look again once it settles;
- ``RESCAN``: its directory was re-found, or events were lost (queue overflow):
  compare the file with what was read.

Why asyncinotify (a maintained ctypes binding) rather than watchfiles: watchfiles
runs a thread per watcher that wakes every `step` ms (50 by default) and takes a
fixed set of paths, where a daemon with a thousand overlays wants one idle file
descriptor and paths added and removed as overlays come and go.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

WRITTEN, CHANGED, RESCAN = "written", "changed", "rescan"

Callback = Callable[[str], None]

try:
    from asyncinotify import Inotify, Mask
except (ImportError, OSError):  # pragma: no cover - not Linux, or the package is missing
    Inotify = Mask = None  # type: ignore[assignment,misc]

if Mask is not None:
    _NAMED_WRITTEN = Mask.CLOSE_WRITE | Mask.MOVED_TO
    _NAMED_CHANGED = Mask.CREATE | Mask.DELETE | Mask.MOVED_FROM | Mask.MODIFY | Mask.ATTRIB
    _SELF_GONE = Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.IGNORED | Mask.UNMOUNT
    _MASK = _NAMED_WRITTEN | _NAMED_CHANGED | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.ONLYDIR


class Subscription:
    """One followed file; `close()` stops it (the watch goes when its directory has no subscriber left)."""

    __slots__ = ("path", "callback", "_watcher", "_wd", "_name")

    def __init__(self, watcher: "_Watcher", path: Path, callback: Callback) -> None:
        self.path = path
        self.callback = callback
        self._watcher = watcher
        self._wd: int | None = None
        self._name = ""  # the entry looked for in the watched directory

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.unsubscribe(self)
            self._watcher = None


class _Watcher:
    """The loop's one inotify instance: watches by descriptor, subscribers by (descriptor, entry name)."""

    def __init__(self) -> None:
        self.inotify = Inotify()
        self.watches: dict[int, object] = {}  # wd → asyncinotify Watch
        self.subs: dict[int, dict[str, set[Subscription]]] = {}
        self.task = asyncio.get_running_loop().create_task(self._run(), name="file-watch")

    # -- subscriptions ------------------------------------------------------------------
    def subscribe(self, path: Path, callback: Callback) -> Subscription:
        sub = Subscription(self, path, callback)
        self._arm(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._detach(sub)
        if not self.subs:
            _close(self)

    def _arm(self, sub: Subscription) -> None:
        """Watch the file's directory, or (while it is missing) the nearest ancestor that exists."""
        target, name = sub.path.parent, sub.path.name
        while True:
            try:
                watch = self.inotify.add_watch(target, _MASK)
                break
            except (FileNotFoundError, NotADirectoryError):
                if target.parent == target:
                    raise
                target, name = target.parent, target.name
        self.watches[watch.wd] = watch
        sub._wd, sub._name = watch.wd, name
        self.subs.setdefault(watch.wd, {}).setdefault(name, set()).add(sub)

    def _detach(self, sub: Subscription) -> None:
        wd = sub._wd
        names = self.subs.get(wd)
        if names is None:
            return
        subs = names.get(sub._name)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del names[sub._name]
        if not names:
            del self.subs[wd]
            watch = self.watches.pop(wd, None)
            if watch is not None:
                try:
                    self.inotify.rm_watch(watch)
                except OSError:
                    pass  # already gone with its directory

    # -- events -------------------------------------------------------------------------
    async def _run(self) -> None:
        async for event in self.inotify:
            try:
                self._dispatch(event)
            except Exception:  # never let the watcher die: every overlay would stop following its file
                log.exception("event=file-watch-failed mask=%s name=%s", event.mask, event.name)

    def _dispatch(self, event) -> None:
        mask = event.mask
        if Mask.Q_OVERFLOW in mask:
            for names in list(self.subs.values()):
                for subs in list(names.values()):
                    _tell(subs, RESCAN)
            return
        watch = event.watch
        if watch is None:
            return
        wd = watch.wd
        if mask & _SELF_GONE:
            self._rearm_all(wd)
            return
        names = self.subs.get(wd)
        if not names or event.name is None:
            return
        subs = names.get(str(event.name))
        if not subs:
            return
        # an ancestor watched while the file's directory is missing: the entry on the way may be back
        if mask & (Mask.CREATE | Mask.MOVED_TO) and any(sub.path.name != sub._name for sub in subs):
            self._rearm_all(wd, only=str(event.name))
        _tell([sub for sub in subs if sub.path.name == sub._name], WRITTEN if mask & _NAMED_WRITTEN else CHANGED)

    def _rearm_all(self, wd: int, only: str | None = None) -> None:
        """The directory behind `wd` was moved, deleted or (`only`) appeared: follow every path anew."""
        names = self.subs.get(wd, {})
        moved = [sub for name, subs in names.items() if only is None or name == only for sub in subs
                 if only is None or sub.path.name != sub._name]
        for sub in moved:
            self._detach(sub)
        if only is None:
            watch = self.watches.pop(wd, None)
            self.subs.pop(wd, None)
            if watch is not None:
                try:
                    self.inotify.rm_watch(watch)  # a moved directory keeps its watch otherwise
                except OSError:
                    pass
        for sub in moved:
            try:
                self._arm(sub)
            except OSError as exc:
                log.error("path=%s event=file-watch-lost error=%s", sub.path, exc)
                continue
            if sub.path.name == sub._name:
                _tell((sub,), RESCAN)


def _tell(subs, kind: str) -> None:
    for sub in list(subs):
        try:
            sub.callback(kind)
        except Exception:
            log.exception("path=%s event=file-watch-callback-failed", sub.path)


_watchers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watcher]" = weakref.WeakKeyDictionary()


def _close(watcher: _Watcher) -> None:
    for loop, w in list(_watchers.items()):
        if w is watcher:
            del _watchers[loop]
    # The fd is closed only once the task has let go of it (removed its reader): a read the loop
    # has already queued for this turn still runs, and on a closed Inotify it raised in asyncio's
    # callback ("Can not work with closed inotify", logged as an error at every few SIGTERMs);
    # worse, a reused fd number would lose its new owner's reader to the task's late remove_reader.
    watcher.task.add_done_callback(lambda _task: watcher.inotify.close())
    watcher.task.cancel()


def watch_file(path: str | os.PathLike, callback: Callback) -> Subscription | None:
    """Follow `path` (absolute) from the running loop; None when inotify cannot be used here
    (no inotify, out of instances or watches: the caller polls instead, and says so)."""
    if Inotify is None:
        return None
    loop = asyncio.get_running_loop()
    watcher = _watchers.get(loop)
    try:
        if watcher is None:
            watcher = _watchers[loop] = _Watcher()
        return watcher.subscribe(Path(path), callback)
    except OSError as exc:
        log.warning("path=%s event=inotify-unavailable error=%s action=poll", path, exc)
        if watcher is not None and not watcher.subs:
            _close(watcher)
        return None
