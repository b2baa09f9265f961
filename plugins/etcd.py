"""etcd: the mapping lives in etcd under ``<prefix>/<vni>/<mac>``, kept current by a watch.

A MappingBackend (enumerable → push mode).  start() reads the overlay's key range
once; a watch from that read's revision + 1 then turns every put/delete into a
MappingChange carrying only the difference (see plugins/etcd_keys.py, pure and
unit-tested).  A watch that breaks is resumed from the last revision + 1; if etcd
has compacted that revision (or its revision went backwards: a restored or new
cluster), the whole range is read again and only the difference is emitted.

Outage: while etcd cannot be reached the overlay keeps serving the last mapping
it had, is DEGRADED with one reason (logged once, not per attempt), and retries
with exponential backoff (0.25 s doubling up to ``etcd/retry_max``), rotating over
``etcd/endpoints``.  When etcd answers again the whole range is re-read, the
difference emitted, and the overlay is ONLINE again.  If etcd is unreachable at
start, start() still succeeds with an empty mapping and DEGRADED status, so the
daemon serves its other overlays; the mapping fills in when etcd comes.

Freeze: a member that stops answering (SIGSTOP, a hung disk) keeps its TCP
connection open, so the watch neither breaks nor delivers, and a cluster that lost
quorum still serves watches that see no writes.  Whenever the watch has been silent
for `etcd/timeout`, a linearizable read (which needs the member alive and a quorum)
must answer within `etcd/timeout`; if not, the overlay is DEGRADED ("stopped
answering") and the watch resumes on the next endpoint from the last revision + 1,
so nothing is lost.  The next read that answers makes it ONLINE again.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from pathlib import Path
from typing import Any

from varpd.backend.base import MappingBackend, OverlayContext
from varpd.backend.errors import BackendError, PropertyError
from varpd.backend.properties import PropertySpec, PropType, Protection
from varpd.nogc import collector_paused

from varpd_plugins.etcd_keys import DELETE, PUT, MappingState, WatchEvent, vni_prefix
from varpd_plugins.etcd_pages import Windows

log = logging.getLogger(__name__)

try:  # optional dependency: `pip install 'varpd[etcd]'`
    import aetcd
    import grpc
    from aetcd import rpc as _rpc
    _IMPORT_ERROR: str | None = None
except ImportError as _exc:  # pragma: no cover - depends on the host
    aetcd = grpc = _rpc = None  # type: ignore[assignment]
    _IMPORT_ERROR = str(_exc)

DEFAULT_PORT = 2379
BACKOFF_START = 0.25
DECODE_SLICE = 0.002  # s of decoding between two turns of the loop (reconciler.SLICE's reason)


def parse_endpoints(text: str) -> list[tuple[str, int, bool]]:
    """'a:2379,https://b:2379,[::1]:2379' → [(host, port, tls?)]; raises ValueError on a bad item."""
    out: list[tuple[str, int, bool]] = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        tls = False
        if "://" in item:
            scheme, _, item = item.partition("://")
            if scheme not in ("http", "https"):
                raise ValueError(f"endpoint scheme {scheme!r} is not http or https")
            tls = scheme == "https"
            item = item.rstrip("/")
        if item.startswith("["):
            host, sep, rest = item[1:].partition("]")
            if not sep:
                raise ValueError(f"endpoint {item!r}: unclosed '['")
            port_text = rest.removeprefix(":") or str(DEFAULT_PORT)
        elif item.count(":") == 1:
            host, port_text = item.split(":")
        elif ":" in item:
            raise ValueError(f"endpoint {item!r}: write an IPv6 address as [addr]:port")
        else:
            host, port_text = item, str(DEFAULT_PORT)
        if not host:
            raise ValueError(f"endpoint {item!r} has no host")
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"endpoint {item!r}: port {port_text!r} is not a number") from None
        if not 1 <= port <= 65535:
            raise ValueError(f"endpoint {item!r}: port {port} is outside 1-65535")
        out.append((host, port, tls))
    if not out:
        raise ValueError("no endpoint given (host:port[,host:port...])")
    return out


class _Client(aetcd.Client if aetcd else object):  # type: ignore[misc]
    """aetcd's client, with TLS: its connect() only knows insecure channels."""

    def __init__(self, host: str, port: int, *, credentials: Any = None, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:
            async with asyncio.timeout(self._connect_wait_timeout):
                await self._connected.wait()
            return
        try:
            self._is_connecting = True
            target = f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"
            options = list(self._options.items())
            if self._credentials is not None:
                self.channel = _rpc.secure_channel(target, self._credentials, options=options)
            else:
                self.channel = _rpc.insecure_channel(target, options=options)
            if self._username is not None and self._password is not None:
                self.auth_stub = _rpc.AuthStub(self.channel)
                try:
                    resp = await self.auth_stub.Authenticate(
                        _rpc.AuthenticateRequest(name=self._username, password=self._password),
                        timeout=self._timeout)
                except _rpc.AioRpcError as exc:
                    aetcd.exceptions._handle_exception(exc)
                self.metadata = (("token", resp.token),)
            self.kvstub = _rpc.KVStub(self.channel)
            self.clusterstub = _rpc.ClusterStub(self.channel)
            self.leasestub = _rpc.LeaseStub(self.channel)
            self.maintenancestub = _rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.watcher.Watcher(_rpc.WatchStub(self.channel), timeout=self._timeout,
                                                  metadata=self.metadata)
            self._connected.set()
        finally:
            self._is_connecting = False


class EtcdSession:
    """Settings of one etcd cluster and a lazily connected client on one of its endpoints.

    reset() drops the client and moves to the next endpoint, so a cluster keeps
    being reachable while one of its members is down.  Shared by the backend and
    `varpd register`.
    """

    def __init__(self, endpoints: str, *, ca: str | None = None, cert: str | None = None, key: str | None = None,
                 username: str | None = None, password: str | None = None, timeout: float = 5.0) -> None:
        self.endpoints = parse_endpoints(endpoints)
        self.timeout = float(timeout)
        self.username = username or None
        self.password = password if username else None
        if bool(cert) != bool(key):
            raise ValueError("etcd/cert and etcd/key go together")
        self._tls_files = (ca or None, cert or None, key or None)
        self._index = 0
        self._client: Any = None

    @property
    def endpoint(self) -> str:
        host, port, _ = self.endpoints[self._index]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def describe(self) -> str:
        return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p, _ in self.endpoints)

    def _credentials(self, tls: bool) -> Any:
        ca, cert, key = self._tls_files
        if not (tls or ca or cert):
            return None

        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        try:
            return grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
        except OSError as exc:
            raise BackendError(f"etcd TLS file: {exc.filename}: {exc.strerror}") from None

    async def client(self) -> Any:
        if self._client is None:
            host, port, tls = self.endpoints[self._index]
            options = {
                "grpc.max_receive_message_length": 256 << 20,
                "grpc.keepalive_time_ms": 10_000,
                "grpc.keepalive_timeout_ms": int(self.timeout * 1000),
                "grpc.initial_reconnect_backoff_ms": 200,
                "grpc.max_reconnect_backoff_ms": 2000,
            }
            self._client = _Client(host, port, credentials=self._credentials(tls), username=self.username,
                                   password=self.password, timeout=self.timeout, options=options)
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that arrives as
        # the awaited call completes, and the backend's task would then never stop
        async with asyncio.timeout(self.timeout):
            await self._client.connect()
        return self._client

    async def reset(self, *, rotate: bool = True) -> None:
        client, self._client = self._client, None
        if rotate:
            self._index = (self._index + 1) % len(self.endpoints)
        if client is not None:
            try:
                async with asyncio.timeout(2.0):
                    await client.close()
            except Exception:  # noqa: BLE001 - a broken channel is closed anyway
                pass

    async def close(self) -> None:
        await self.reset(rotate=False)


# errors that mean "etcd is not reachable (now)": retry, never crash the overlay
def _unreachable_errors() -> tuple[type[BaseException], ...]:
    errs: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError, ConnectionError)
    if aetcd is not None:
        errs += (aetcd.ClientError, grpc.RpcError)
    return errs


class _Resync(Exception):
    """The watch cannot resume from our revision: read the whole range again."""


class _Stalled(ConnectionError):
    """The watched member did not answer a read in time (frozen, or no quorum): try the next endpoint."""


def _short(exc: BaseException) -> str:
    """One short line for logs and the DEGRADED reason."""
    if grpc is not None and isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {(exc.details() or '').splitlines()[0][:160] if exc.details() else ''}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text[:160]}" if text else name


class EtcdBackend(MappingBackend):
    name = "etcd"
    properties = (
        PropertySpec("etcd/endpoints", PropType.STRING, Protection.REQUIRED,
                     description="comma-separated host:port (or http[s]://host:port) of the etcd cluster"),
        PropertySpec("etcd/prefix", PropType.STRING, Protection.WRITE, default="/varpd",
                     description="key prefix; records are <prefix>/<vni>/<mac>"),
        PropertySpec("etcd/ca", PropType.STRING, description="CA bundle (PEM) to verify etcd's certificate (TLS)"),
        PropertySpec("etcd/cert", PropType.STRING, description="client certificate (PEM) for TLS"),
        PropertySpec("etcd/key", PropType.STRING, description="client private key (PEM) for TLS"),
        PropertySpec("etcd/username", PropType.STRING, description="etcd user (with etcd/password[_file])"),
        PropertySpec("etcd/password", PropType.STRING, secret=True,
                     description="etcd password (never shown; etcd/password_file keeps it out of the config)"),
        PropertySpec("etcd/password_file", PropType.STRING, description="file holding the etcd password"),
        PropertySpec("etcd/timeout", PropType.UINT, Protection.WRITE, default=5, minimum=1, maximum=300,
                     description="seconds for one etcd request, to notice a dead connection, and of "
                                 "silence before a watched member is checked (DEGRADED if it does not answer)"),
        PropertySpec("etcd/page_size", PropType.UINT, Protection.WRITE, default=5000, minimum=1, maximum=1_000_000,
                     description="keys per request of the full read (at start and after an outage or compaction)"),
        PropertySpec("etcd/retry_max", PropType.UINT, Protection.WRITE, default=5, minimum=1, maximum=300,
                     description="longest wait in seconds between reconnection attempts"),
    )

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if _IMPORT_ERROR:
            return f"the etcd client library is missing ({_IMPORT_ERROR}); pip install aetcd"
        return None

    def __init__(self, ctx: OverlayContext, props: dict[str, Any]) -> None:
        super().__init__(ctx, props)
        self.prefix = str(props.get("etcd/prefix", "/varpd"))
        self.range_prefix = vni_prefix(self.prefix, ctx.vni)
        password = props.get("etcd/password")
        if props.get("etcd/password_file"):
            try:
                password = Path(str(props["etcd/password_file"])).read_text().rstrip("\n")
            except OSError as exc:
                raise PropertyError("etcd/password_file", f"cannot read: {exc.strerror}") from None
        if bool(props.get("etcd/username")) != bool(password):
            raise PropertyError("etcd/username", "etcd/username and etcd/password[_file] go together")
        try:
            self.session = EtcdSession(str(props["etcd/endpoints"]), ca=props.get("etcd/ca"),
                                       cert=props.get("etcd/cert"), key=props.get("etcd/key"),
                                       username=props.get("etcd/username"), password=password,
                                       timeout=int(props.get("etcd/timeout", 5)))
        except ValueError as exc:
            raise PropertyError("etcd/endpoints" if "endpoint" in str(exc) else "etcd/cert", str(exc)) from None
        self.timeout = self.session.timeout
        self.retry_max = float(props.get("etcd/retry_max", 5))
        self.page_size = int(props.get("etcd/page_size", 5000))
        self.state = MappingState(self.prefix, ctx.vni)
        self.revision = 0  # every event up to here is in self.mapping
        self._logged: dict[str, str] = {}  # key → the problem already logged for it
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._call: Any = None
        self._outage_since: float | None = None
        self._stalled = False  # DEGRADED because a read went unanswered; cleared by the next answer
        # counters, for tests and debugging
        self.loads = 0
        self.watches = 0
        self.events = 0
        self.pages = 0

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._load()
        except _unreachable_errors() as exc:
            self._outage(exc)
        self._task = asyncio.get_running_loop().create_task(self._run(loaded=self._outage_since is None))

    async def stop(self) -> None:
        self._stopping = True
        if self._call is not None:
            self._call.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None
        await self.session.close()

    # -- reading -----------------------------------------------------------------------
    async def _read_range(self, client: Any) -> tuple[MappingState, int]:
        """The whole range at one revision, about `page_size` keys a request (varpd_plugins.etcd_pages),
        each page decoded in slices.

        One response of a million keys was 150 MB of protobuf held at once, and decoding it
        held the event loop for seconds; pages are read at the first page's revision, so the
        whole is one consistent snapshot and the watch starts at revision + 1.  A revision
        compacted during the read (a long read, a busy cluster) starts the read again."""
        for attempt in itertools.count(1):
            state = MappingState(self.prefix, self.ctx.vni)
            windows = Windows(self.range_prefix.encode(), self.page_size)  # each request ~page_size keys
            revision = 0
            try:
                while True:
                    start, end = windows.request()
                    resp = await client.kvstub.Range(
                        _rpc.RangeRequest(key=start, range_end=end, limit=self.page_size, revision=revision),
                        timeout=self.timeout, metadata=client.metadata)
                    revision = revision or resp.header.revision
                    kvs = resp.kvs
                    if kvs:
                        await self._decode(state, kvs)
                        self.pages += 1
                    if not windows.advance(kvs[0].key if kvs else None, kvs[-1].key if kvs else None, resp.more,
                                           resp.count):
                        return state, revision
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.OUT_OF_RANGE or attempt >= 5:
                    raise
                log.warning("etcd prefix=%s event=read-restarted reason=%s", self.range_prefix, _short(exc))
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _decode(state: MappingState, kvs: Any) -> None:
        """One page into `state`, giving the loop a turn every DECODE_SLICE s (~5 us a key: seconds
        for a million).  On the loop in slices, as the reconciler plans, rather than in a thread
        that takes the GIL from the loop anyway: A/B at 100k keys (load average 6-10, 4 runs each)
        the slices started in a median 2.0 s against 3.0 s, with the same worst loop lags (the
        machine's scheduling: 25-240 ms either way)."""
        left, rest = len(kvs), iter(kvs)  # an iterator: slicing upb's repeated field copies what is left
        while left > 0:
            started = time.perf_counter()
            while left > 0 and time.perf_counter() - started < DECODE_SLICE:
                state.load_page(itertools.islice(rest, 64))
                left -= 64
            await asyncio.sleep(0)

    async def _load(self) -> None:
        """Read the whole range; swap in the new mapping and emit only the difference."""
        client = await self.session.client()
        with collector_paused():  # a million new records: each full collection would rescan them all
            state, revision = await self._read_range(client)
            newer = state.mapping()
            # both snapshots are immutable: the O(n) difference is taken off the loop too
            change = await asyncio.to_thread(self.mapping.diff, newer)
            # built with the collector off, the records are all in its youngest generation: the
            # first collections after it comes back would scan every one (0.3-0.6 s each at 1M,
            # measured as loop stalls right after the read); none is cyclic, so they are kept
            # out of the collector's scans for good (the old table's are freed by refcount)
            gc.freeze()
        self.state = state
        self.revision = revision
        self.mapping = newer
        self.emit(change)
        self.loads += 1
        self._log_problems()
        log.info("etcd=%s prefix=%s event=loaded records=%d revision=%d upserted=%d removed=%d",
                 self.session.endpoint, self.range_prefix, len(self.mapping), self.revision,
                 len(change.upserted), len(change.removed))
        if self._outage_since is not None:
            log.warning("etcd=%s event=reachable-again outage=%.1fs records=%d", self.session.endpoint,
                        time.monotonic() - self._outage_since, len(self.mapping))
            self._outage_since = None
        self._stalled = False
        self.set_degraded(None)

    def _log_problems(self) -> None:
        problems = self.state.problems
        for key, msg in problems.items():
            if self._logged.get(key) != msg:
                log.error("etcd prefix=%s event=bad-record ignored: %s", self.range_prefix, msg)
        for key in self._logged.keys() - problems.keys():
            log.info("etcd prefix=%s event=record-usable key=%s", self.range_prefix, key)
        self._logged = dict(problems)

    def apply_events(self, events: list[WatchEvent], revision: int) -> None:
        """Apply one watch response's events and emit their difference."""
        change, _ = self.state.apply(events)
        self.revision = max(self.revision, revision)
        self.events += len(events)
        if change:
            self.mapping = self.state.mapping()  # a snapshot costs the changes since the last one
            self.emit(change)
            # DEBUG: one line per watch response at 1k edits/s; the overlay logs mapping-change, rate-limited
            log.debug("etcd prefix=%s event=watch revision=%d upserted=%d removed=%d", self.range_prefix,
                     self.revision, len(change.upserted), len(change.removed))
        self._log_problems()

    async def _watch(self) -> None:
        """Watch from self.revision + 1 until the stream breaks (raises), applying events as they come."""
        client = await self.session.client()
        stub = _rpc.WatchStub(client.channel)
        key = self.range_prefix.encode()
        create = _rpc.WatchRequest(create_request=_rpc.WatchCreateRequest(
            key=key, range_end=aetcd.utils.prefix_range_end(key), start_revision=self.revision + 1))
        done = asyncio.Event()

        async def requests():
            yield create
            await done.wait()

        call = self._call = stub.Watch(requests(), metadata=client.metadata)
        try:
            first = await self._read(call, self.timeout)
            self._check(first)
            if first.header.revision < self.revision:
                raise _Resync(f"etcd's revision {first.header.revision} is behind ours {self.revision} "
                              "(restored or replaced cluster)")
            self.watches += 1
            log.info("etcd=%s prefix=%s event=watching from=%d", self.session.endpoint, self.range_prefix,
                     self.revision + 1)
            self._handle(first)
            reading = None
            while True:
                if self._stalled:
                    await self._probe(client)  # the member we moved to must answer before we are current
                if reading is None:
                    reading = self._start_read(call)
                if not await self._wait(call, reading, self.timeout):
                    await self._probe(client)  # silent for etcd/timeout: is the member (and quorum) alive?
                    continue
                resp, reading = reading.result(), None
                self._check(resp)
                self._handle(resp)
        finally:
            self._call = None
            done.set()
            call.cancel()

    @staticmethod
    def _start_read(call: Any) -> asyncio.Future:
        fut = asyncio.ensure_future(call.read())
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        return fut

    @staticmethod
    async def _wait(call: Any, fut: asyncio.Future, timeout: float | None) -> bool:
        """Wait for a pending call.read(); False on timeout (the read stays pending).  Cancelling
        cancels the gRPC call first: a task blocked in grpc.aio's read() may otherwise never finish
        cancelling."""
        try:
            done, _ = await asyncio.wait({fut}, timeout=timeout)
        except asyncio.CancelledError:
            call.cancel()
            raise
        return bool(done)

    async def _read(self, call: Any, timeout: float | None = None) -> Any:
        """call.read() within `timeout` (else the call is cancelled and TimeoutError raised)."""
        fut = self._start_read(call)
        if not await self._wait(call, fut, timeout):
            call.cancel()
            raise asyncio.TimeoutError(f"etcd did not answer the watch request within {timeout}s")
        return fut.result()

    async def _probe(self, client: Any) -> None:
        """A linearizable read within etcd/timeout, or _Stalled (DEGRADED, logged once)."""
        try:
            async with asyncio.timeout(self.timeout):
                await client.get(self.range_prefix.encode())
        except asyncio.CancelledError:
            raise
        except (TimeoutError, *_unreachable_errors()) as exc:
            what = f"no answer within {self.timeout:g}s" if isinstance(exc, TimeoutError) else _short(exc)
            reason = (f"etcd member {self.session.endpoint} stopped answering ({what}): frozen, or the cluster "
                      f"lost quorum; serving the last known mapping ({len(self.mapping)} records), trying "
                      f"{'the next endpoint' if len(self.session.endpoints) > 1 else 'again'}")
            if not self._stalled and self._outage_since is None:
                log.error("etcd prefix=%s event=stalled %s", self.range_prefix, reason)
                self.set_degraded(reason)
            self._stalled = True
            raise _Stalled(reason) from None
        if self._stalled:
            self._stalled = False
            log.warning("etcd=%s prefix=%s event=answering-again revision=%d", self.session.endpoint,
                        self.range_prefix, self.revision)
            self.set_degraded(None)

    def _check(self, resp: Any) -> None:
        if resp is grpc.aio.EOF:
            raise ConnectionError("the watch stream ended")
        if resp.compact_revision:
            raise _Resync(f"revision {self.revision + 1} was compacted (etcd keeps from {resp.compact_revision})")
        if resp.canceled:
            raise ConnectionError(f"etcd cancelled the watch: {resp.cancel_reason or 'no reason given'}")

    def _handle(self, resp: Any) -> None:
        if not resp.events:
            return
        events = []
        rev = self.revision
        for ev in resp.events:
            kv = ev.kv
            key = kv.key.decode("utf-8", "replace")
            if ev.type == _rpc.Event.EventType.DELETE:
                events.append(WatchEvent(DELETE, key))
            else:
                events.append(WatchEvent(PUT, key, kv.value, kv.create_revision))
            rev = max(rev, kv.mod_revision)
        self.apply_events(events, rev)

    # -- the loop that keeps it current --------------------------------------------------
    async def _run(self, *, loaded: bool) -> None:
        need_load = not loaded
        failures = 0 if loaded else 1
        while not self._stopping:
            if failures:
                await asyncio.sleep(min(self.retry_max, BACKOFF_START * 2 ** (failures - 1)))
            watches_before = self.watches
            try:
                if need_load:
                    await self._load()
                    need_load = False
                if not self._stalled:
                    failures = 0
                await self._watch()
            except asyncio.CancelledError:
                raise
            except _Resync as exc:
                log.warning("etcd=%s prefix=%s event=resync reason=%s action=reload", self.session.endpoint,
                            self.range_prefix, exc)
                need_load = True
                continue
            except Exception as exc:  # noqa: BLE001 - unreachable, or anything else: never stop the loop
                task = asyncio.current_task()
                if self._stopping or (task is not None and task.cancelling()):
                    # grpc.aio may turn our cancellation into an RpcError (CANCELLED): don't swallow it
                    raise asyncio.CancelledError() from exc
                unexpected = not isinstance(exc, _unreachable_errors())
                if unexpected and self._outage_since is None:
                    log.exception("etcd prefix=%s event=unexpected-error", self.range_prefix)
                await self.session.reset()
                if isinstance(exc, _Stalled):
                    # resume on the next endpoint from the last revision + 1, backing off: without a
                    # quorum anywhere every member may answer the watch and fail the read at once
                    log.debug("etcd prefix=%s event=stalled action=resume from=%d on=%s", self.range_prefix,
                              self.revision + 1, self.session.endpoint)
                    failures += 1
                    continue
                if self.watches != watches_before and not unexpected:
                    # the watch ran and broke (a member or leader went away, a restart): resume at once,
                    # from the last revision + 1, without calling it an outage yet
                    log.info("etcd prefix=%s event=watch-broken error=%s action=resume from=%d",
                             self.range_prefix, _short(exc), self.revision + 1)
                    failures = 0
                    continue
                self._outage(exc)
                need_load = True  # after an outage, re-read everything and emit the difference
                failures += 1

    def _outage(self, exc: BaseException) -> None:
        """Log the outage once and mark the overlay DEGRADED (the reason stays the same while it lasts)."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            reason = (f"etcd unreachable ({self.session.describe()}): {_short(exc)}; serving the last known "
                      f"mapping ({len(self.mapping)} records), retrying")
            log.error("etcd prefix=%s event=outage %s", self.range_prefix, reason)
            self.set_degraded(reason)
