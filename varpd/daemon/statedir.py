"""The daemon's claim on its state directory, taken before anything else starts.

One daemon per state_dir: two would fight over the same devices and files, so the
second is refused (flock on `daemon.lock`, released by the kernel when the holder dies,
even by -9).  A state_dir that cannot be written is refused at start with one line,
rather than discovered at the first create, and the state is made private to the
daemon's user (0700 directories, 0600 files), tightening what an older varpd left.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
from pathlib import Path

from varpd.daemon.errors import StateError
from varpd.daemon.state import DIR_MODE, FILE_MODE, SUBDIRS, write_atomic

log = logging.getLogger(__name__)

LOCK_NAME = "daemon.lock"
PROBE_NAME = ".write-probe.json"


class StateDirLock:
    """Holds the flock for the daemon's lifetime; release() (or process exit) lets the next one in."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def claim(state_dir: Path) -> StateDirLock:
    """Lock, prove writable and tighten `state_dir`; StateError with one line if any of it fails."""
    state_dir = Path(state_dir)
    try:
        state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"state_dir {state_dir} cannot be created: {exc.strerror or exc}") from None
    lock = _lock(state_dir)
    try:
        _probe(state_dir)
        _tighten(state_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def _lock(state_dir: Path) -> StateDirLock:
    """The lock is held on a read-only descriptor (a file open for writing would keep the filesystem
    from being remounted read-only); the pid is written through another one, for the refusal message."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise StateError(f"state_dir {state_dir} cannot be written ({path}: {exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateError(f"another varpd (pid {holder}) is running with state_dir {state_dir} "
                         f"(it holds {path}): not starting a second one") from None
    try:
        with open(path, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    except OSError as exc:
        os.close(fd)
        raise StateError(f"state_dir {state_dir} cannot be written ({path}: {exc.strerror or exc})") from None
    return StateDirLock(path, fd)


def _probe(state_dir: Path) -> None:
    """A real write (data, fsync, rename), as every state change makes: full and read-only fail here."""
    path = state_dir / PROBE_NAME
    try:
        write_atomic(path, {"probe": os.getpid()})
    except StateError as exc:
        raise StateError(f"state_dir {state_dir} cannot be written: {exc}") from None
    with contextlib.suppress(OSError):
        path.unlink()


def _tighten(state_dir: Path) -> None:
    """0700 for the state_dir and its subdirectories, 0600 for their files; symlinks are left alone.

    A sticky, world-writable state_dir (someone pointed it at /tmp) is not changed: it is shared,
    and only varpd's own subdirectories are made private."""
    changed = 0
    top = os.lstat(state_dir)
    if top.st_mode & stat.S_ISVTX or top.st_uid != os.geteuid():
        log.warning("state_dir=%s event=state-dir-shared mode=%o action=only-subdirectories-made-private",
                    state_dir, stat.S_IMODE(top.st_mode))
    else:
        changed += _chmod(state_dir, top, DIR_MODE)
    for sub in SUBDIRS:
        d = state_dir / sub
        try:
            d.mkdir(mode=DIR_MODE, exist_ok=True)
            changed += _chmod(d, os.lstat(d), DIR_MODE)
            for entry in os.scandir(d):
                if entry.is_file(follow_symlinks=False):
                    changed += _chmod(Path(entry.path), entry.stat(follow_symlinks=False), FILE_MODE)
        except OSError as exc:
            raise StateError(f"state_dir {state_dir}: cannot make {d} private: {exc.strerror or exc}") from None
    if changed:
        log.warning("state_dir=%s event=state-permissions-tightened paths=%d dirs=%o files=%o",
                    state_dir, changed, DIR_MODE, FILE_MODE)


def _chmod(path: Path, st: os.stat_result, mode: int) -> int:
    if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) == mode:
        return 0
    os.chmod(path, mode)  # not a symlink (lstat above)
    return 1
