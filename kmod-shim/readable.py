"""Waiting for a socket to become readable on the loop, in a way closing the socket can end.

A closed socket's fd number is free for the next socket at once. A waiter that unregisters
itself late (``remove_reader(fd)`` when its cancelled task finally runs) would unregister
that next socket, or die with "File descriptor N is used by transport" (an overlay's devices
re-made: a netlink transport took a closed tap's number). So whoever closes the socket ends
the wait first, and the waiter leaves the registration alone once that happened.
"""
from __future__ import annotations

import asyncio


class ReadWaiter:
    """At most one waiting task per socket (the owner's recv path)."""

    def __init__(self) -> None:
        self._waiting: tuple[asyncio.AbstractEventLoop, int, asyncio.Future] | None = None

    async def wait(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
        self._waiting = (loop, fd, ready)
        try:
            await ready
        finally:
            if self._waiting is not None and self._waiting[2] is ready:  # not already ended by end()
                self._waiting = None
                loop.remove_reader(fd)

    def end(self, exc: BaseException) -> None:
        """Call before closing the socket: unregisters a waiting task's fd and raises ``exc`` in it."""
        if self._waiting is None:
            return
        loop, fd, ready = self._waiting
        self._waiting = None
        if not loop.is_closed():
            loop.remove_reader(fd)
        if not ready.done():
            ready.set_exception(exc)
