"""http: the mapping lives behind an HTTP API (docs/mapping-api.yaml), resolved on demand.

    GET {url}/v1/overlays/{vni}/macs/{mac}   → the record of a VNIC MAC (hosts.json's fields + "mac")
    GET {url}/v1/overlays/{vni}/ips/{ip}     → the record owning an overlay IPv4/IPv6 address (ARP/NDP)
    GET {url}/v1/overlays/{vni}/events       → server-sent events: upsert / remove / resync

The backend is not enumerable: the daemon runs it in on-demand mode and caches
its answers (positive for `cache_ttl`, negative for `negative_ttl`).  A 404 is
"unknown" and the daemon caches it negatively.  Every other failure — refused
or timed-out connections, 5xx (retried with backoff), non-JSON, a record of the
wrong shape, a body over 64 KiB (reading stops there) — is logged in one line
naming the URL and the problem (at most one line per kind of problem every 10 s,
so a miss storm does not flood the log) and answered as "unknown" too: the daemon
then caches that negatively for only `negative_ttl` (5 s by default) and asks
again after it, which is the retry-later we want.  Nothing here raises into the
daemon, and every request is bounded by `http/timeout` per attempt, so the loop
is never blocked.  While the server gives no usable answer the overlay is
DEGRADED (set once, with the first reason); the next good answer clears it, and
meanwhile lookups make a single attempt instead of retrying.

With `http/events` (default) a background task follows the events stream: each
upsert/remove is emitted as a MappingChange, so the daemon invalidates its cache
and reprograms the kernel at once instead of waiting for a TTL.  It reconnects
with backoff, resuming with Last-Event-ID; when the server cannot replay what
was missed (it restarted, or we were away too long) it sends `resync`, and every
record this backend has answered is fetched again and the differences emitted.

One aiohttp ClientSession (one connection pool) per backend, opened in start()
and closed in stop(); TLS is verified (against `http/ca` if given) unless
`http/insecure`; `http/token` or `http/token_file` is sent as a bearer token.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from varpd import json_input
from varpd.backend.base import Backend, OverlayContext
from varpd.backend.errors import BackendError, PropertyError
from varpd.backend.properties import PropertySpec, PropType, Protection
from varpd.config.secrets import read_token_file
from varpd.mapping_server.wire import WireError, record_from_json
from varpd.model import Destination, IPAddress, MappingChange, MappingRecord
from varpd.tasks import TaskSet
from varpd_plugins.http_client import NOT_FOUND, FetchError, RateLimitedLog, backoff, get_json, sse_events

log = logging.getLogger(__name__)

_FAILED = object()  # a lookup that got no usable answer (distinct from a 404's None)
MAX_KNOWN = 65536  # records remembered for re-validation after a resync


TIMEOUT = PropertySpec("http/timeout", PropType.SECONDS, Protection.WRITE, default=2, minimum=0.05, maximum=60,
                       description="seconds (fractions allowed) one request attempt may take")

class HttpBackend(Backend):
    name = "http"
    enumerable = False
    properties = (
        PropertySpec("http/url", PropType.STRING, Protection.REQUIRED,
                     description="base URL of the mapping server, http:// or https://"),
        TIMEOUT,
        PropertySpec("http/retries", PropType.UINT, Protection.WRITE, default=2, maximum=10,
                     description="further attempts after a failed one (timeouts, 5xx, refused), with backoff"),
        PropertySpec("http/token", PropType.STRING, Protection.WRITE, secret=True,
                     description="bearer token sent with every request (never shown)"),
        PropertySpec("http/token_file", PropType.STRING, Protection.WRITE,
                     description="absolute path of a file holding the bearer token (re-read on 401)"),
        PropertySpec("http/ca", PropType.STRING, Protection.WRITE,
                     description="absolute path of the CA bundle (PEM) that verifies an https server"),
        PropertySpec("http/insecure", PropType.BOOL, Protection.WRITE, default=False,
                     description="do not verify the https server's certificate"),
        PropertySpec("http/events", PropType.BOOL, Protection.WRITE, default=True,
                     description="follow the server's change stream (SSE) to reprogram without waiting for TTLs"),
    )

    #: seconds without a byte (the reference server sends a keepalive every 15 s) before reconnecting
    events_idle_timeout = 45.0
    #: first and largest delay between reconnections of the events stream
    events_backoff = (0.2, 10.0)

    def __init__(self, ctx: OverlayContext, props: dict[str, Any]) -> None:
        super().__init__(ctx, props)
        raw = str(props["http/url"]).strip()
        url = URL(raw)
        if url.scheme not in ("http", "https") or not url.host:
            raise PropertyError("http/url", f"{raw!r} is not an http:// or https:// URL")
        if url.query_string or url.fragment:
            raise PropertyError("http/url", f"{raw!r}: a base URL has no query or fragment")
        self.base = str(url).rstrip("/")
        self._root = URL(self.base) / "v1" / "overlays" / str(ctx.vni)
        self.timeout: float = TIMEOUT.parse(props.get("http/timeout", TIMEOUT.default))
        self.retries = int(props.get("http/retries", 2))
        self.token: str | None = props.get("http/token") or None
        self.token_file = props.get("http/token_file") or None
        if self.token and self.token_file:
            raise PropertyError("http/token_file", "give http/token or http/token_file, not both")
        if self.token_file and not Path(self.token_file).is_absolute():
            raise PropertyError("http/token_file", f"{self.token_file} is not an absolute path")
        self.ca = props.get("http/ca") or None
        self.insecure = bool(props.get("http/insecure", False))
        if self.ca and not Path(self.ca).is_absolute():
            raise PropertyError("http/ca", f"{self.ca} is not an absolute path")
        if self.ca and self.insecure:
            raise PropertyError("http/insecure", "http/ca and http/insecure contradict each other")
        self.events = bool(props.get("http/events", True))
        self._session: aiohttp.ClientSession | None = None
        self._tasks = TaskSet()
        self._events_task: asyncio.Task | None = None
        self._unreachable = False
        self._known: collections.OrderedDict[str, MappingRecord] = collections.OrderedDict()
        self._last_id: str | None = None
        self._resync_task: asyncio.Task | None = None
        self._stream_up = False
        self._say = RateLimitedLog(log)
        self.stats: collections.Counter[str] = collections.Counter()

    # -- lifecycle ----------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        if self.ca:
            try:
                return ssl.create_default_context(cafile=self.ca)
            except (OSError, ssl.SSLError) as exc:
                raise BackendError(f"http/ca {self.ca}: cannot load: {getattr(exc, 'strerror', None) or exc}") from None
        return True

    def _read_token_file(self) -> str:
        try:
            return read_token_file(self.token_file)
        except ValueError as exc:
            raise BackendError(f"http/token_file {self.token_file}: {exc}") from None

    async def start(self) -> None:
        if self.token_file:
            self.token = self._read_token_file()
        if self.token and URL(self.base).scheme == "http":
            log.warning("http=%s event=insecure-token the bearer token is sent over plain http", self.base)
        if self.insecure:
            log.warning("http=%s event=insecure the server's certificate is not verified", self.base)
        connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=64, limit_per_host=32, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": "varpd-http-backend", "Accept": "application/json"})
        log.info("http=%s event=started vni=%d timeout=%gs retries=%d events=%s", self.base, self.ctx.vni,
                 self.timeout, self.retries, self.events)
        if self.events:
            self._events_task = self._tasks.spawn(self._events_loop())

    async def stop(self) -> None:
        await self._tasks.cancel_all()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    # -- answers ------------------------------------------------------------------------
    async def lookup(self, mac: str) -> Destination | None:
        """Where `mac` lives; None when the server says 404 *or* gave no usable answer (see the module doc)."""
        rec = await self._get_record("macs", mac, mac=mac)
        return rec.dest if isinstance(rec, MappingRecord) else None

    async def record(self, mac: str) -> MappingRecord | None:
        rec = await self._get_record("macs", mac, mac=mac)
        return rec if isinstance(rec, MappingRecord) else None

    async def dhcp_proxy(self, mac: str) -> str | None:
        rec = await self.record(mac)
        return rec.dhcp_proxy if rec else None

    async def arp(self, ip: IPv4Address) -> str | None:
        rec = await self._get_record("ips", str(ip), ip=ip)
        return rec.mac if isinstance(rec, MappingRecord) else None

    async def ndp(self, ip: IPv6Address) -> str | None:
        rec = await self._get_record("ips", str(ip), ip=ip)
        return rec.mac if isinstance(rec, MappingRecord) else None

    async def _get_record(self, kind: str, key: str, *, mac: str | None = None,
                          ip: IPAddress | None = None) -> MappingRecord | None | object:
        """The record, None for a 404, or _FAILED (already logged, degraded set)."""
        url = self._root / kind / key
        if self._session is None:
            return _FAILED
        attempts = 1 if self._unreachable else self.retries + 1
        problem: FetchError | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(backoff(attempt - 1, base=min(0.1, self.timeout)))
            self.stats["requests"] += 1
            try:
                body = await get_json(self._session, str(url), self._headers(), self.timeout)
            except FetchError as exc:
                problem = exc
                log.debug("http=%s event=attempt-failed url=%s attempt=%d error=%s", self.base, url, attempt + 1,
                          exc.reason)
                if exc.kind == "auth" and self.token_file:
                    self._reload_token()
                if not exc.retry:
                    break
                continue
            if body is NOT_FOUND:
                self._succeeded()
                if mac is not None:
                    self._known.pop(mac, None)
                return None
            try:
                rec = record_from_json(body, mac)
                if ip is not None and ip not in (rec.arp, rec.ndp):
                    raise WireError(f"record of {rec.mac} does not own {ip}")
            except WireError as exc:
                problem = FetchError(f"wrong schema: {exc}", retry=False, kind="schema")
                break
            self._succeeded()
            self._remember(rec)
            return rec
        self._failed(str(url), problem, attempts)
        return _FAILED

    def _reload_token(self) -> None:
        try:
            self.token = self._read_token_file()
        except BackendError as exc:
            self._say(logging.ERROR, "token", "http=%s event=token-file-failed error=%s", self.base, exc)

    def _remember(self, rec: MappingRecord) -> None:
        self._known[rec.mac] = rec
        self._known.move_to_end(rec.mac)
        while len(self._known) > MAX_KNOWN:
            self._known.popitem(last=False)

    def _succeeded(self) -> None:
        self._unreachable = False
        if self.degraded is not None:
            log.info("http=%s event=recovered", self.base)
            self.set_degraded(None)

    def _failed(self, url: str, problem: FetchError | None, attempts: int) -> None:
        self.stats["failures"] += 1
        reason = problem.reason if problem else "no answer"
        tries = f" after {attempts} attempts" if attempts > 1 and problem and problem.retry else ""
        self._say(logging.WARNING, f"lookup:{problem.kind if problem else '?'}",
                  "http=%s event=lookup-failed url=%s error=%s%s; answered as unknown", self.base, url, reason, tries)
        if problem is None or problem.unreachable or problem.kind.startswith("http-5"):
            self._unreachable = True
        if self.degraded is None:
            self.set_degraded(f"mapping server {self.base}: {reason}")

    # -- change stream ------------------------------------------------------------------
    async def _events_loop(self) -> None:
        attempt = 0
        url = str(self._root / "events")
        while True:
            self._stream_up = False
            try:
                await self._follow(url)
                problem = FetchError("the server ended the stream", retry=True, kind="ended")
            except asyncio.CancelledError:
                raise
            except FetchError as exc:
                problem = exc
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                problem = FetchError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                                     retry=True, unreachable=True, kind=type(exc).__name__)
            except Exception as exc:  # never let the stream task die: log and reconnect
                problem = FetchError(f"unexpected {type(exc).__name__}: {exc}", retry=True, kind="bug")
                log.exception("http=%s event=events-bug url=%s", self.base, url)
            if self._stream_up:
                attempt = 0
            delay = backoff(attempt, *self.events_backoff)
            attempt += 1
            self.stats["events_disconnects"] += 1
            self._say(logging.WARNING, f"events:{problem.kind}",
                      "http=%s event=events-disconnected url=%s error=%s; reconnecting in %.1fs",
                      self.base, url, problem.reason, delay)
            if problem.unreachable and self.degraded is None:
                self._unreachable = True
                self.set_degraded(f"mapping server {self.base}: events stream: {problem.reason}")
            await asyncio.sleep(delay)

    async def _follow(self, url: str) -> None:
        headers = self._headers(Accept="text/event-stream")
        sent_id = self._last_id
        if sent_id:
            headers["Last-Event-ID"] = sent_id
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.events_idle_timeout)
        async with self._session.get(url, headers=headers, timeout=timeout, allow_redirects=False) as resp:
            if resp.status in (401, 403):
                if self.token_file:
                    self._reload_token()
                raise FetchError(f"HTTP {resp.status}: the bearer token was refused", retry=True, kind="auth")
            if resp.status != 200:
                raise FetchError(f"HTTP {resp.status} {resp.reason or ''}".rstrip(), retry=True,
                                 unreachable=resp.status >= 500, kind=f"http-{resp.status}")
            ctype = resp.headers.get("Content-Type", "")
            if not ctype.startswith("text/event-stream"):
                raise FetchError(f"not an event stream (Content-Type {ctype!r})", retry=True, kind="ctype")
            async for ev in sse_events(resp):
                self._on_event(ev, resumed=sent_id is not None)

    def _on_event(self, ev, *, resumed: bool) -> None:
        self.stats[f"events_{ev.kind}"] += 1
        if ev.kind == "hello":
            self._stream_up = True
            if ev.id:
                self._last_id = ev.id
            log.info("http=%s event=events-connected resumed=%s", self.base, resumed)
            self._succeeded()
            if not resumed and self._known:
                self._start_resync()  # answers given before the stream was up may be stale
            return
        if ev.kind == "resync":
            if ev.id:
                self._last_id = ev.id
            self._start_resync()
            return
        if ev.kind not in ("upsert", "remove"):
            return  # unknown kinds are for newer clients
        try:
            rec = record_from_json(json_input.loads(ev.data))
        except (ValueError, WireError) as exc:
            self._say(logging.WARNING, "events:bad", "http=%s event=bad-event url=%s kind=%s error=%s; resyncing",
                      self.base, self._root / "events", ev.kind, exc)
            self._start_resync()
        else:
            if ev.kind == "upsert":
                if rec.mac in self._known:
                    self._remember(rec)
                change = MappingChange(upserted=(rec,))
            else:
                self._known.pop(rec.mac, None)
                change = MappingChange(removed=(rec,))
            self.emit(change)
        if ev.id:
            self._last_id = ev.id

    def _start_resync(self) -> None:
        if self._resync_task is None or self._resync_task.done():
            self._resync_task = self._tasks.spawn(self._resync())

    async def _resync(self) -> None:
        """Fetch every record answered so far again and emit what differs (the events we missed)."""
        before = dict(self._known)
        self.stats["resyncs"] += 1
        sem = asyncio.Semaphore(8)

        async def one(mac: str):
            async with sem:
                return mac, await self._get_record("macs", mac, mac=mac)

        results = await asyncio.gather(*(one(mac) for mac in before))
        upserted = tuple(r for mac, r in results if isinstance(r, MappingRecord) and r != before[mac])
        removed = tuple(before[mac] for mac, r in results if r is None)
        log.info("http=%s event=resynced records=%d upserted=%d removed=%d", self.base, len(before),
                 len(upserted), len(removed))
        self.emit(MappingChange(upserted=upserted, removed=removed))
