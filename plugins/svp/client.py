"""An asyncio SVP client: one TCP (optionally TLS) connection to a portolan-style server.

- Requests carry a u32 id; replies are matched to their request by id (and the
  reply op must be the request's), so any number may be in flight at once and
  the server may answer in any order.
- The server's name is resolved on every connection attempt and each address
  is tried in turn (IPv4 and IPv6, several A records).
- A failed connection attempt, or a connection that breaks, puts the client in
  DOWN: requests then fail at once with `SvpUnavailable` (no pile-up of
  timeouts) while a background task reconnects with exponential backoff,
  1 s doubling to 32 s (illumos svp_conn.c), reset only by a connection on
  which a request got its reply: a server that accepts and then breaks the
  protocol every time is not hit every second forever.
- Idle timeout (30 s): a connection on which nothing has been sent or received
  for that long is closed (and reopened by the next request); a connection with
  requests outstanding that receives nothing for that long is declared dead
  (SvpTimeout for its requests, then reconnect).  Each request is also bounded
  by its own `timeout`.
- A frame that is not valid SVP (bad version, CRC, size, op) closes the
  connection: the stream cannot be resynchronised.  So does a reply larger
  than its request allows (`wire.reply_limit`: a LOG_ACK no more than the
  bytes its LOG_REQ asked for), before its payload is read.

`on_state(reason)` is called with a one-line reason when a connection attempt
fails or an open connection is lost (not on an idle close), and with None when
a connection is up, so the owner can mark itself DEGRADED and recover, and
knows when the server may have lost state in between.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import ssl as ssl_mod
import time
from typing import Callable

from varpd_plugins.svp import wire

log = logging.getLogger(__name__)

IDLE, CONNECTING, UP, DOWN, CLOSED = "idle", "connecting", "up", "down", "closed"


class SvpError(Exception):
    """A request got no answer; the message is one line."""


class SvpUnavailable(SvpError):
    """Not connected (server unreachable or reconnecting): failed without waiting."""


class SvpTimeout(SvpError):
    """No reply within the request's timeout, or the connection went silent."""


class SvpConnectionLost(SvpError):
    """The connection broke while the request was outstanding."""


def backoff_delay(attempt: int, first: float = 1.0, cap: float = 32.0) -> float:
    """first·2^attempt capped at `cap`, with up to 10% jitter so that many hosts do not reconnect in step."""
    delay = min(cap, first * (2 ** min(attempt, 30)))
    return delay * (0.9 + random.random() * 0.1)


class SvpClient:
    def __init__(self, host: str, port: int = wire.DEFAULT_PORT, *, ssl: ssl_mod.SSLContext | None = None,
                 request_timeout: float = 2.0, connect_timeout: float = 2.0, idle_timeout: float = 30.0,
                 backoff: tuple[float, float] = (1.0, 32.0),
                 on_state: Callable[[str | None], None] | None = None) -> None:
        self.host, self.port = host, port
        self.ssl = ssl
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.backoff = backoff
        self.on_state = on_state
        self.state = IDLE
        self.reason: str | None = None  # why DOWN
        self.peer: str | None = None  # "addr:port" of the current connection
        self.connections = 0  # successful connections so far
        self._next_id = random.randrange(1, 1 << 32)
        self._pending: dict[int, tuple[int, asyncio.Future, float, int]] = {}  # id → (op, future, sent, limit)
        self._stray_limit = 0  # the largest reply allowed to any request sent so far (a late reply's bound)
        self._exchanged = False  # a reply arrived on the current connection
        self._writer: asyncio.StreamWriter | None = None
        self._want = asyncio.Event()  # a connection is wanted
        self._changed = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self._last_io = time.monotonic()
        self._last_rx = time.monotonic()
        self._closing = False

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"svp-client-{self.host}")

    async def connect(self) -> None:
        """Start and ask for a connection now (instead of at the first request)."""
        self.start()
        self._want.set()

    async def close(self) -> None:
        task, self._task = self._task, None
        self._closing = True
        while task is not None and not task.done():
            # Cancel until it ends: on 3.11 a cancel that lands as an asyncio.timeout() expires comes
            # out as TimeoutError (swallowed by the connect path) instead of CancelledError.
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.debug("svp=%s:%d event=client-task-failed error=%s", self.host, self.port, task.exception())
        self._drop(SvpConnectionLost("client closed"))
        await self._set_state(CLOSED)

    async def _set_state(self, state: str, reason: str | None = None) -> None:
        async with self._changed:
            self.state, self.reason = state, reason
            self._changed.notify_all()

    # -- requests -----------------------------------------------------------------------
    async def request(self, msg: wire.Message, timeout: float | None = None) -> wire.Message:
        """Send `msg`, return the decoded reply; SvpError (one line) when there is none."""
        timeout = self.request_timeout if timeout is None else timeout
        reply_op = wire.REPLIES.get(msg.OP)
        if reply_op is None:
            raise ValueError(f"{type(msg).__name__} is not a request")
        deadline = time.monotonic() + timeout
        if self.state == CLOSED:
            raise SvpUnavailable("client closed")
        if self.state == DOWN:
            raise SvpUnavailable(self.reason or "not connected")
        if self.state != UP:
            self.start()
            self._want.set()
            try:
                async with asyncio.timeout(timeout):
                    async with self._changed:
                        await self._changed.wait_for(lambda: self.state in (UP, DOWN, CLOSED))
            except TimeoutError:
                raise SvpTimeout(f"not connected within {timeout:g}s") from None
            if self.state != UP:
                raise SvpUnavailable(self.reason or "not connected")
        writer = self._writer
        if writer is None:  # the connection is being torn down; the state follows in a moment
            raise SvpConnectionLost("connection closing")
        req_id = self._new_id()
        fut = asyncio.get_running_loop().create_future()
        limit = wire.reply_limit(msg)
        self._stray_limit = max(self._stray_limit, limit)
        self._pending[req_id] = (reply_op, fut, time.monotonic(), limit)
        try:
            writer.write(wire.encode(msg, req_id))
            self._last_io = time.monotonic()
            await writer.drain()
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await fut
        except TimeoutError:
            raise SvpTimeout(f"no answer to {msg.OP.name} within {timeout:g}s") from None
        except (OSError, ConnectionError) as exc:
            raise SvpConnectionLost(f"send failed: {exc or type(exc).__name__}") from None
        finally:
            self._pending.pop(req_id, None)

    def _new_id(self) -> int:
        while True:
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
            if self._next_id not in self._pending:
                return self._next_id

    def _drop(self, exc: SvpError) -> None:
        for _, fut, _, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()

    # -- connection ---------------------------------------------------------------------
    async def _resolve(self) -> list[tuple[str, int]]:
        """Every (address, port) the server's name has now, in the resolver's order."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            raise OSError(f"cannot resolve {self.host}: {getattr(exc, 'strerror', None) or exc or 'timeout'}") from None
        return list(dict.fromkeys(info[4][:2] for info in infos))

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        addrs = await self._resolve()
        problems = []
        for addr, port in addrs:
            shown = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
            try:
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await asyncio.open_connection(
                        addr, port, ssl=self.ssl, server_hostname=self.host if self.ssl else None)
                return reader, writer, shown
            except TimeoutError:
                problems.append(f"{shown}: no answer within {self.connect_timeout:g}s")
            except ssl_mod.SSLError as exc:
                problems.append(f"{shown}: TLS: {exc.reason or exc}")
            except OSError as exc:
                problems.append(f"{shown}: {os.strerror(exc.errno) if exc.errno else exc}")
        raise OSError("; ".join(problems) or f"{self.host}: no address")

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            await self._want.wait()
            await self._set_state(CONNECTING)
            try:
                reader, writer, peer = await self._open()
            except OSError as exc:
                reason = f"connection failed: {exc}"
                await self._set_state(DOWN, reason)
                self._notify(reason)
                await asyncio.sleep(backoff_delay(attempt, *self.backoff))
                attempt += 1
                continue  # _want stays set: keep trying until a connection is made
            self._exchanged = False
            self._writer, self.peer = writer, peer
            self.connections += 1
            self._last_io = self._last_rx = time.monotonic()
            await self._set_state(UP)
            log.debug("svp=%s:%d event=connected peer=%s", self.host, self.port, peer)
            self._notify(None)
            why = await self._serve(reader, writer)
            if self._exchanged:
                attempt = 0  # the server answered: it is not one that breaks every connection
            self._writer = None
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (OSError, TimeoutError, ConnectionError, ssl_mod.SSLError):
                pass
            if why is None:  # idle: closed on purpose, reopened by the next request
                self._want.clear()
                await self._set_state(IDLE)
                log.debug("svp=%s:%d event=idle-close peer=%s", self.host, self.port, peer)
                continue
            self._drop(SvpTimeout(why) if "silent" in why else SvpConnectionLost(why))
            log.warning("svp=%s:%d event=disconnected peer=%s reason=%s", self.host, self.port, peer, why)
            await self._set_state(DOWN, why)
            self._notify(why)
            await asyncio.sleep(backoff_delay(attempt, *self.backoff))
            attempt += 1

    def _notify(self, reason: str | None) -> None:
        if self.on_state is not None:
            try:
                self.on_state(reason)
            except Exception:  # the owner's bug must not kill the connection task
                log.exception("svp=%s:%d event=state-listener-failed", self.host, self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str | None:
        """Read replies until the connection ends; the reason, or None for an idle close."""
        watchdog = asyncio.get_running_loop().create_task(self._watchdog())
        reading = asyncio.get_running_loop().create_task(self._read_loop(reader))
        try:
            done, _ = await asyncio.wait({watchdog, reading}, return_when=asyncio.FIRST_COMPLETED)
            first = done.pop()
            return first.result()
        finally:
            for t in (watchdog, reading):
                t.cancel()
            await asyncio.gather(watchdog, reading, return_exceptions=True)

    async def _watchdog(self) -> str | None:
        tick = max(0.01, min(1.0, self.idle_timeout / 4))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self._pending:
                oldest = min(sent for _, _, sent, _ in self._pending.values())
                if now - max(self._last_rx, oldest) > self.idle_timeout:
                    return f"connection silent for {self.idle_timeout:g}s with requests outstanding"
            elif now - max(self._last_io, self._last_rx) > self.idle_timeout:
                return None

    async def _read_loop(self, reader: asyncio.StreamReader) -> str:
        try:
            while True:
                head = await reader.readexactly(wire.HEADER_SIZE)
                header = wire.Header.unpack(head)
                entry = self._pending.get(header.id)
                limit = entry[3] if entry is not None else self._stray_limit
                if header.size > limit:
                    raise wire.SvpProtocolError(
                        "size", f"reply of {header.size} bytes to request {header.id}, which allows {limit}")
                payload = await reader.readexactly(header.size)
                self._last_rx = time.monotonic()
                msg = wire.decode_payload(header, payload)
                entry = self._pending.get(header.id)
                if entry is None:
                    log.debug("svp=%s:%d event=stray-reply id=%d op=0x%02x", self.host, self.port, header.id,
                              header.op)
                    continue
                want_op, fut, _, _ = entry
                if header.op != want_op:
                    raise wire.SvpProtocolError(
                        "op", f"reply op 0x{header.op:02x} to request {header.id}, expected 0x{want_op:02x}")
                self._exchanged = True
                if not fut.done():
                    fut.set_result(msg)
        except asyncio.IncompleteReadError as exc:
            return "server closed the connection" + (" mid-message" if exc.partial else "")
        except wire.SvpProtocolError as exc:
            log.warning("svp=%s:%d event=protocol-error kind=%s error=%s", self.host, self.port, exc.kind, exc)
            return f"protocol error: {exc}"
        except (OSError, ConnectionError, ssl_mod.SSLError) as exc:
            return f"connection error: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}"
