"""Transport of the http backend: bounded GETs and a server-sent-events reader.

Kept apart from the backend so that every way a server can misbehave is
handled in one place: each failure becomes a `FetchError` with a one-line
reason and whether trying again may help; nothing here raises anything else.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp

from varpd import json_input

MAX_BODY = 64 * 1024  # a record is ~200 bytes; anything near this is garbage
MAX_EVENT = 64 * 1024
NOT_FOUND = object()


class FetchError(Exception):
    """One line of what went wrong; `retry`: may a new attempt help (transport, 5xx, timeout)."""

    def __init__(self, reason: str, *, retry: bool, unreachable: bool = False, kind: str = "error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # a stable name of the problem, for rate-limiting its log line
        self.retry = retry
        self.unreachable = unreachable  # no usable answer from the server at all


def backoff(attempt: int, base: float = 0.05, cap: float = 1.0) -> float:
    """Exponential with full jitter on the upper half: base·2^attempt, at most `cap`."""
    delay = min(cap, base * (2 ** attempt))
    return delay / 2 + random.random() * delay / 2


async def read_capped(resp: aiohttp.ClientResponse, cap: int = MAX_BODY) -> bytes:
    """The body, or FetchError as soon as it exceeds `cap` (the connection is closed, not drained)."""
    length = resp.content_length
    if length is not None and length > cap:
        resp.close()
        raise FetchError(f"body of {length} bytes exceeds the {cap // 1024} KiB cap", retry=False, kind="too-large")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > cap:
            resp.close()
            raise FetchError(f"body exceeds the {cap // 1024} KiB cap (stopped reading)", retry=False, kind="too-large")
        chunks.append(chunk)
    return b"".join(chunks)


def _transport_reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer within {timeout:g}s (timeout)"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate refused: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        text = (os.strerror(err.errno) if err.errno else str(err)) if err else str(exc)
        return f"connection failed: {text} ({exc.host}:{exc.port})"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"truncated or malformed body: {exc}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    return f"{type(exc).__name__}: {exc}"


async def get_json(session: aiohttp.ClientSession, url: str, headers: dict[str, str], timeout: float) -> Any:
    """One GET: the parsed JSON of a 200, NOT_FOUND for a 404, else FetchError.  Bounded by `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            async with session.get(url, headers=headers, allow_redirects=False) as resp:
                if resp.status == 404:
                    return NOT_FOUND
                if resp.status in (401, 403):
                    raise FetchError(f"HTTP {resp.status}: the bearer token was refused", retry=False, kind="auth")
                if resp.status >= 500 or resp.status == 429:
                    raise FetchError(f"HTTP {resp.status} {resp.reason or ''}".rstrip(), retry=True, kind=f"http-{resp.status}")
                if resp.status != 200:
                    raise FetchError(f"unexpected HTTP {resp.status} {resp.reason or ''}".rstrip(), retry=False, kind=f"http-{resp.status}")
                body = await read_capped(resp)
    except FetchError:
        raise
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError, TimeoutError) as exc:
        raise FetchError(_transport_reason(exc, timeout), retry=True, unreachable=True,
                         kind=type(exc).__name__) from None
    try:
        return json_input.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        head = body[:40].decode(errors="replace")
        raise FetchError(f"malformed JSON ({exc}; body starts {head!r})", retry=False, kind="json") from None


@dataclass(frozen=True, slots=True)
class SseEvent:
    kind: str
    data: str
    id: str | None


async def sse_events(resp: aiohttp.ClientResponse, cap: int = MAX_EVENT) -> AsyncIterator[SseEvent]:
    """Parse text/event-stream (WHATWG): events end at a blank line; `:` lines are comments.

    An event larger than `cap` ends the stream with FetchError: nothing grows without bound.
    """
    buf = b""
    kind, data, event_id = "message", [], None
    async for chunk in resp.content.iter_any():
        buf += chunk
        if len(buf) > cap:
            raise FetchError(f"event larger than {cap // 1024} KiB", retry=True, kind="too-large")
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line, buf = buf[:nl].rstrip(b"\r").decode(errors="replace"), buf[nl + 1:]
            if not line:
                if data:
                    yield SseEvent(kind, "\n".join(data), event_id)
                elif kind != "message":
                    yield SseEvent(kind, "", event_id)
                kind, data, event_id = "message", [], None
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
        if sum(len(d) for d in data) > cap:
            raise FetchError(f"event larger than {cap // 1024} KiB", retry=True, kind="too-large")


class RateLimitedLog:
    """At most one line per key every `interval` seconds; the next one says how many were held back."""

    def __init__(self, logger, interval: float = 10.0, clock=time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, level: int, key: str, msg: str, *args: Any) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        held = self._held.pop(key, 0)
        if held:
            msg += " (%d similar suppressed)"
            args = (*args, held)
        self._last[key] = now
        self.logger.log(level, msg, *args)
        return True
