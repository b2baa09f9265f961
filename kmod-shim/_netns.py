"""Create sockets inside a named network namespace.

A socket stays bound to the network namespace it was created in, so the
only thing that must run inside the namespace is ``socket()`` itself (plus,
for AF_PACKET, name -> ifindex resolution and ``bind``).  ``setns`` changes
the namespace of the calling *thread* only, so the work is done in a
short-lived dedicated thread that exits afterwards; the event loop thread is
never moved.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Callable, TypeVar

from .types import KmodError

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_path(name: str) -> str:
    if "/" in name:
        return name
    return os.path.join(NETNS_RUN_DIR, name)


def netns_identity(name: str) -> int | None:
    """The inode of the namespace bound at /run/netns/NAME, None when no namespace is there (or a
    stale mount-point file): one deleted and made again under the same name has a new inode, and
    what was in the old one (devices, sockets) is not in the new one."""
    try:
        st = os.stat(netns_path(name))
        if st.st_dev != os.stat("/proc/self/ns/net").st_dev:
            return None
    except OSError:
        return None
    return st.st_ino


def _mount_of(path: str, mountinfo: str) -> list[str] | None:
    """The /proc/self/mountinfo fields of the mount `path` lies on (the last one stacked on the longest
    mount point that is a prefix of it)."""
    best: list[str] | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        if (path == point or path.startswith(point.rstrip("/") + "/")) and (
                best is None or len(point) >= len(best[4])):
            best = fields
    return best


def private_mount_reason(mountinfo: str | None = None) -> str | None:
    """Why a namespace bind-mounted under NETNS_RUN_DIR here would be seen by no one else, or None.

    `ip netns exec` and a systemd unit's sandbox (PrivateTmp=, ProtectSystem=...) run their process in
    a copy of the host's mount namespace whose mounts are slaves of the host's (`master:N` in
    mountinfo): mounts arrive from the host, none go back.  Namespaces made by the host (`ip netns
    add`, varpd-netns@.service) are therefore visible here, namespaces made here are not."""
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo") as fh:
                mountinfo = fh.read()
        except OSError as exc:
            return f"cannot read /proc/self/mountinfo: {exc.strerror}"
    fields = _mount_of(os.path.realpath(NETNS_RUN_DIR), mountinfo)
    if fields is None:
        return None
    optional = fields[6:fields.index("-", 6)] if "-" in fields[6:] else []
    if any(tag.startswith("master:") for tag in optional):
        return (f"this daemon runs in a private mount namespace (a systemd sandbox or ip netns exec: "
                f"{fields[4]} is a slave mount), where a namespace it made would be seen by no one else")
    return None


def run_in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run ``fn()`` with the calling thread in ``netns`` (None: current ns)."""
    if netns is None:
        return fn()
    path = netns_path(netns)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KmodError(f"network namespace {netns!r} does not exist") from None
    result: list = []
    error: list = []

    def worker() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
                try:
                    result.append(fn())
                finally:
                    # Not strictly needed (the thread dies), but keep it clean.
                    _setns(own)
            finally:
                os.close(own)
        except BaseException as exc:  # propagated to the caller
            error.append(exc)

    try:
        t = threading.Thread(target=worker, name=f"varpd-kmod-netns-{netns}", daemon=True)
        t.start()
        t.join()
    finally:
        os.close(target)
    if error:
        raise error[0]
    return result[0]
