"""What keeps slow or numerous admin clients from taking the daemon's file descriptors.

Three guards, each answering a part of issue #12 (1094 half-sent requests reached the fd limit,
the API became unreachable and asyncio logged 231k tracebacks in 48 s):

- `ConnectionGate`: at most `limit` connections per listener; the next one gets a one-line 503
  and is closed at once (counted), so neither listener can use up the descriptors and a flood on
  TCP leaves the unix socket usable.
- timeouts: a connection must finish its first request's headers within `HEADER_TIMEOUT` of being
  accepted (enforced here: older aiohttp releases only time out idle connections after an
  answer), later ones within aiohttp's keepalive_timeout (the runner sets it to `HEADER_TIMEOUT`)
  of the previous answer; `BODY_TIMEOUT` bounds reading a body (varpd.admin.app).
- `AcceptErrorThrottle`: asyncio logs `socket.accept() out of system resource` with a traceback
  per attempt (up to 100 a tick per listener); it is logged once per `interval`, with a count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import time
from typing import Any, Callable

from aiohttp import web

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0  # s from accept (or the previous answer) to the end of the request's headers
BODY_TIMEOUT = 10.0  # s to receive a request body once its headers are in
ACCEPT_ERROR_INTERVAL = 60.0  # s between two log lines about failed accepts


def default_connection_limit() -> int:
    """Per listener: an eighth of the soft RLIMIT_NOFILE (128 of the usual 1024), at most 256, at
    least 8, so two listeners together stay well below the daemon's descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 256
    return max(8, min(256, soft // 8))


class ConnectionGate:
    """Counts one listener's open connections and refuses those beyond `limit`."""

    def __init__(self, listener: str, limit: int, header_timeout: float = HEADER_TIMEOUT) -> None:
        self.listener = listener
        self.limit = limit
        self.header_timeout = header_timeout
        self.active = 0
        self.refused = 0
        body = json.dumps({"error": f"too many admin connections on {listener} (at most {limit}): "
                                    "try again later"}).encode()
        self._busy = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                      b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    def factory(self, make: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.BaseProtocol]:
        """Wrap aiohttp's protocol factory: counted protocols below the limit, a refusal above it.

        Counted when accepted (the factory runs for each accept of a batch before any
        connection_made), released in connection_lost."""

        def protocol() -> asyncio.BaseProtocol:
            if self.active >= self.limit:
                self.refused += 1
                return _Refused(self._busy)
            self.active += 1
            return _Counted(make(), self)

        return protocol


class _Counted(asyncio.Protocol):
    """aiohttp's RequestHandler behind a proxy that releases the gate when the connection ends and
    aborts it if the first request's headers (up to the blank line) are not in by the deadline."""

    __slots__ = ("_inner", "_gate", "_deadline", "_tail")

    def __init__(self, inner: Any, gate: ConnectionGate) -> None:
        self._inner, self._gate = inner, gate
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._deadline = asyncio.get_running_loop().call_later(self._gate.header_timeout, transport.abort)  # type: ignore[attr-defined]
        self._inner.connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._gate.active -= 1
        self._headers_done()
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self._headers_done()
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def _headers_done(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _Refused(asyncio.Protocol):
    """Answers 503 and closes without reading: costs the descriptor for one loop iteration."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self._answer)  # type: ignore[attr-defined]
        transport.close()


class GatedSite(web.SockSite):
    """A SockSite whose connections pass through `gate` (unix and TCP listeners alike)."""

    __slots__ = ("_gate",)

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, gate: ConnectionGate) -> None:
        super().__init__(runner, sock)
        self._gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._gate.factory(server), sock=self._sock, backlog=self._backlog)


class AcceptErrorThrottle:
    """An event-loop exception handler: failed accepts (EMFILE, ENFILE, ENOBUFS, ENOMEM) are logged
    once per `interval` with how often they happened; every other context goes to `previous`."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, previous: Callable | None, interval: float = ACCEPT_ERROR_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.previous = previous
        self.interval = interval
        self._clock = clock
        self._next_log = 0.0
        self.suppressed = 0
        self.total = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != self.MESSAGE:
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.total += 1
        now = self._clock()
        if now < self._next_log:
            self.suppressed += 1
            return
        exc, sock = context.get("exception"), context.get("socket")
        where = sock.getsockname() if sock is not None else "?"
        reason = getattr(exc, "strerror", None) or exc
        also = f" suppressed={self.suppressed}" if self.suppressed else ""
        log.error("event=admin-accept-failed listener=%s error=%r%s action=retry next_report_after=%gs",
                  where, reason, also, self.interval)
        self.suppressed = 0
        self._next_log = now + self.interval
