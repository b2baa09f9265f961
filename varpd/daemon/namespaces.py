"""One kernel event socket per network namespace that holds an overlay, the daemon's own included.

A namespace's misses and address changes arrive on its own netlink socket (a socket belongs
to the namespace it was made in), so the daemon keeps one MissListener(addresses=True) for
each namespace in use: opened when its first overlay starts, closed when its last one goes,
and made again when the namespace was deleted and re-created (the old socket would listen
to the dead namespace, and keep it alive). Whether a namespace is still the one the sockets
were made in is one stat() of /run/netns/NAME a second, not a netlink poll, and only while an
overlay is in another namespace than the daemon's (`elsewhere`): an idle daemon with overlays
only in its own never wakes for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from varpd.tasks import TaskSet
from varpd_kmod._netns import netns_identity
from varpd_kmod.misses import Event, MissListener
from varpd_kmod.types import KmodError

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0  # seconds between looks at /run/netns for deleted and re-created namespaces

Handler = Callable[[str | None, Event], Awaitable[None]]


class NamespaceListeners:
    """`sync(wanted)` keeps a listener open for each namespace in `wanted` that exists; every event
    goes to `handler(netns, event)` (None: the daemon's namespace)."""

    def __init__(self, handler: Handler, rcvbuf: int = 8 * 1024 * 1024) -> None:
        self._handler, self._rcvbuf = handler, rcvbuf
        self._watch: dict[str | None, set[int]] = {}
        self.elsewhere = asyncio.Event()  # set while some overlay is (to be) in another namespace
        self._open: dict[str | None, tuple[MissListener, int | None, asyncio.Task]] = {}
        self._tasks = TaskSet(on_failure=lambda exc: log.error("event=namespace-listener-failed error=%r", exc))

    def identity(self, netns: str | None) -> int | None:
        """The namespace's identity now (0 for the daemon's own, None if it does not exist)."""
        return 0 if netns is None else netns_identity(netns)

    def sync(self, wanted: set[str | None]) -> list[str | None]:
        """Open, re-open or close listeners so that one listens in each of `wanted`; returns the
        namespaces whose identity changed since their listener was opened (deleted, re-created)
        and the ones newly listened to (made, or back)."""
        changed = []
        if any(netns is not None for netns in wanted):
            self.elsewhere.set()
        else:
            self.elsewhere.clear()
        for netns, (_, identity, _) in list(self._open.items()):
            now = self.identity(netns)
            if netns not in wanted or now != identity:
                self._close(netns)
                if now != identity:
                    changed.append(netns)
                    log.warning("event=namespace-changed netns=%s state=%s", netns, "gone" if now is None else "new")
        for netns in wanted - set(self._open):
            identity = self.identity(netns)
            if identity is None:
                continue  # its overlays say DEGRADED; opened once it exists again
            try:
                listener = MissListener(netns, self._rcvbuf, addresses=True)
                listener.set_entry_watch(self._watch.get(netns, ()))
            except KmodError as exc:  # deleted since the stat: the next sync tries again
                log.warning("event=namespace-listener-failed netns=%s error=%s", netns, exc)
                continue
            self._open[netns] = (listener, identity, self._tasks.spawn(self._run(netns, listener)))
            changed.append(netns)
        return list(dict.fromkeys(changed))

    async def _run(self, netns: str | None, listener: MissListener) -> None:
        async for ev in listener.events():
            await self._handler(netns, ev)

    def set_entry_watch(self, ifindexes: dict[str | None, set[int]]) -> None:
        """The devices (per namespace) whose FDB/neighbour changes are reported (drift repair)."""
        self._watch = ifindexes
        for netns, (listener, _, _) in self._open.items():
            listener.set_entry_watch(ifindexes.get(netns, ()))

    def _close(self, netns: str | None) -> None:
        listener, _, task = self._open.pop(netns)
        task.cancel()
        listener.close()

    def listening(self) -> list[str | None]:
        return list(self._open)

    async def close(self) -> None:
        for netns in list(self._open):
            self._close(netns)
        await self._tasks.cancel_all()
