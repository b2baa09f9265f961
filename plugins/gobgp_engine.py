"""The BGP engine of the evpn backend: a gobgpd process varpd starts, supervises and drives over gRPC.

One gobgpd per daemon and API port, shared by every evpn overlay using that port (a host has one
BGP speaker on port 179): the first overlay starts it, the last one stopped stops it.  gobgpd is
started with no configuration file; the global settings and the neighbours are given over the API
(StartBgp, AddPeer) so that nothing but varpd's own properties configures it.

Supervision: gobgpd's exit or a broken API stream is reported to every subscriber (`engine_lost`,
the overlays keep their routes stale and are DEGRADED), then gobgpd is started again with
exponential backoff (0.5 s doubling to 10 s), configured again, and the subscribers told
(`engine_ready`) so that they advertise their routes again; the watch restarts with the whole
table (init), so each subscriber applies only the difference.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import shutil
import signal
from dataclasses import dataclass
from typing import Any, Protocol

from varpd.backend.errors import BackendError
from varpd.tasks import TaskSet

from varpd_plugins import gobgp_api
from varpd_plugins.evpn_codec import evpn_family

log = logging.getLogger(__name__)
logging.getLogger("grpc._cython.cygrpc").setLevel(logging.INFO)  # a debug line per call otherwise

BACKOFF_START, BACKOFF_MAX = 0.5, 10.0
PR_SET_PDEATHSIG = 1
READY_TIMEOUT = 10.0


class Subscriber(Protocol):
    def engine_paths(self, paths: list[Any]) -> None: ...
    def engine_peer(self, address: str, state: str) -> None: ...
    def engine_lost(self, reason: str) -> None: ...
    async def engine_ready(self, engine: "GobgpEngine") -> None: ...


@dataclass(frozen=True)
class EngineSettings:
    """What one gobgpd is started and configured with; overlays sharing it must agree."""

    asn: int
    router_id: str
    listen_ip: str
    neighbors: tuple[str, ...]
    peer_asn: int
    api_port: int = 50051
    bgp_port: int = 179
    hold_time: int = 9  # FRR's `frr defaults datacenter`: keepalive 3, hold 9
    restart_time: int = 120  # advertised in the graceful-restart capability: how long peers keep our routes
    binary: str = "gobgpd"


class GobgpEngine:
    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.api = gobgp_api.load()
        self.subscribers: list[Subscriber] = []
        self.peers: dict[str, str] = {a: "IDLE" for a in settings.neighbors}
        self.restarts = 0
        self.state = "starting"
        self._proc: asyncio.subprocess.Process | None = None
        self._channel: Any = None
        self.stub: Any = None
        self._tasks = TaskSet()
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._failed: str | None = None

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Start gobgpd and wait until it answers; BackendError if it cannot run at all."""
        binary = shutil.which(self.settings.binary)
        if binary is None:
            raise BackendError(f"evpn: {self.settings.binary} not found (Debian package gobgpd)")
        self._binary = binary
        self._task = self._tasks.spawn(self._supervise())
        waiter = asyncio.ensure_future(self._ready.wait())
        done, _ = await asyncio.wait({waiter, self._task}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            reason = self._failed or f"gobgpd did not answer within {READY_TIMEOUT:.0f}s"
            await self.stop()
            raise BackendError(f"evpn: {reason}")

    async def stop(self) -> None:
        self._task = None
        await self._tasks.cancel_all()
        await self._kill()

    async def _kill(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self.stub = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()

    # -- supervision ---------------------------------------------------------------
    async def _supervise(self) -> None:
        backoff = BACKOFF_START
        while True:
            try:
                await self._run_once()
                reason = "gobgpd's API stream ended"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = _short(exc)
            if self._proc is not None and self._proc.returncode is None:
                try:  # a broken stream is usually gobgpd dying: say so with its status
                    await asyncio.wait_for(self._proc.wait(), 1)
                except asyncio.TimeoutError:
                    pass
            rc = self._proc.returncode if self._proc is not None else None
            if rc is not None:
                reason = f"gobgpd exited with status {rc}"
            self._failed = reason
            self.state = "restarting"
            self._ready.clear()
            log.error("evpn engine=gobgpd event=lost error=%s action=restart-in-%.1fs", reason, backoff)
            for s in list(self.subscribers):
                s.engine_lost(reason)
            await self._kill()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            self.restarts += 1

    async def _run_once(self) -> None:
        import grpc

        s = self.settings
        self._proc = await asyncio.create_subprocess_exec(
            self._binary, f"--api-hosts=127.0.0.1:{s.api_port}", "--log-plain", "--pprof-disable",
            "--log-level=info", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, preexec_fn=_die_with_parent)
        self._tasks.spawn(self._forward_log(self._proc))
        self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{s.api_port}")
        self.stub = self.api.grpc.GobgpApiStub(self._channel)
        await self._wait_api()
        await self._configure()
        pb = self.api.pb
        watch = self.stub.WatchEvent(pb.WatchEventRequest(
            peer=pb.WatchEventRequest.Peer(),
            table=pb.WatchEventRequest.Table(filters=[pb.WatchEventRequest.Table.Filter(
                type=pb.WatchEventRequest.Table.Filter.BEST, init=True)])))
        self.state = "running"
        self._failed = None
        self._ready.set()
        for sub in list(self.subscribers):
            await sub.engine_ready(self)
        log.info("evpn engine=gobgpd event=ready pid=%s api=127.0.0.1:%d router_id=%s asn=%d neighbors=%s",
                 self._proc.pid, s.api_port, s.router_id, s.asn, ",".join(s.neighbors))
        async for ev in watch:
            which = ev.WhichOneof("event")
            if which == "table":
                paths = list(ev.table.paths)
                for sub in list(self.subscribers):
                    sub.engine_paths(paths)
            elif which == "peer":
                p = ev.peer.peer
                address = p.state.neighbor_address or p.conf.neighbor_address
                if address and address != "<nil>":
                    state = pb.PeerState.SessionState.Name(p.state.session_state)
                    if self.peers.get(address) != state:
                        log.info("evpn engine=gobgpd event=peer-state peer=%s state=%s", address, state)
                    self.peers[address] = state
                    for sub in list(self.subscribers):
                        sub.engine_peer(address, state)

    async def _forward_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            text = line.decode(errors="replace").rstrip()
            if text:
                log.debug("gobgpd: %s", text)

    async def _wait_api(self) -> None:
        pb = self.api.pb
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
        while True:
            if self._proc.returncode is not None:
                raise BackendError(f"gobgpd exited with status {self._proc.returncode} at start")
            try:
                await self.stub.GetBgp(pb.GetBgpRequest(), timeout=1)
                return
            except Exception as exc:  # not listening yet
                if asyncio.get_running_loop().time() > deadline:
                    raise BackendError(f"gobgpd API 127.0.0.1:{self.settings.api_port}: {_short(exc)}") from None
                await asyncio.sleep(0.05)

    async def _configure(self) -> None:
        s, pb = self.settings, self.api.pb
        await self.stub.StartBgp(pb.StartBgpRequest(**{"global": pb.Global(
            asn=s.asn, router_id=s.router_id, listen_port=s.bgp_port, listen_addresses=[s.listen_ip])}))
        family = evpn_family(self.api)
        for address in s.neighbors:
            peer = pb.Peer(
                conf=pb.PeerConf(neighbor_address=address, peer_asn=s.peer_asn),
                # idle hold 1 s after a reset; after a dropped session gobgpd 3.10 waits a fixed 5 s
                timers=pb.Timers(config=pb.TimersConfig(connect_retry=1, hold_time=s.hold_time,
                                                        keepalive_interval=max(1, s.hold_time // 3),
                                                        idle_hold_time_after_reset=1)),
                transport=pb.Transport(local_address=s.listen_ip),
                # graceful restart (RFC 4724), not helper only: the capability lists l2vpn evpn
                # (forwarding-state bit clear), so a GR helper that covers EVPN (gobgpd does, for
                # every family listed) keeps this host's routes, stale, for restart_time when the
                # session drops without a NOTIFICATION (varpd and gobgpd killed), then withdraws
                # them.  FRR 8.4 does not: its helper covers unicast, multicast and VPN only.
                # Peers send End-of-RIB: when it comes, a re-established session has sent
                # everything.  Not local_restarting (gobgpd's -r, which sets the forwarding-state
                # bit): that also holds back this host's updates until every peer's End-of-RIB
                graceful_restart=pb.GracefulRestart(enabled=True, helper_only=False,
                                                    restart_time=min(4095, s.restart_time)),
                afi_safis=[pb.AfiSafi(config=pb.AfiSafiConfig(family=family, enabled=True),
                                      mp_graceful_restart=pb.MpGracefulRestart(
                                          config=pb.MpGracefulRestartConfig(enabled=True)))])
            await self.stub.AddPeer(pb.AddPeerRequest(peer=peer))

    # -- routes ---------------------------------------------------------------------
    async def add_path(self, path: Any) -> bytes:
        return (await self.stub.AddPath(self.api.pb.AddPathRequest(path=path))).uuid

    async def delete_path(self, uuid: bytes) -> None:
        await self.stub.DeletePath(self.api.pb.DeletePathRequest(family=evpn_family(self.api), uuid=uuid))

    async def best_paths(self) -> list[Any]:
        """The EVPN table's best paths now (for an overlay joining a running engine)."""
        pb = self.api.pb
        out = []
        async for answer in self.stub.ListPath(pb.ListPathRequest(table_type=pb.GLOBAL, family=evpn_family(self.api)),
                                               timeout=30):
            out.extend(p for p in answer.destination.paths if p.best)
        return out

    async def end_of_rib(self, address: str) -> bool:
        """Whether `address` has sent End-of-RIB for EVPN since its session came up."""
        pb = self.api.pb
        async for answer in self.stub.ListPeer(pb.ListPeerRequest(address=address), timeout=2):
            for afi in answer.peer.afi_safis:
                f = afi.state.family if afi.state.HasField("family") else afi.config.family
                if f.safi == pb.Family.SAFI_EVPN and afi.mp_graceful_restart.state.end_of_rib_received:
                    return True
        return False

    @property
    def running(self) -> bool:
        return self.state == "running" and self.stub is not None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when varpd dies.  An orphaned gobgpd would go on
    advertising a dead host's VNICs; killed, its sessions drop like a crashed host's and peers
    keep its routes only for the graceful-restart time it advertised."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _short(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    text = details() if callable(details) else str(exc)
    return " ".join(str(text or type(exc).__name__).split())[:300]


# -- one engine per API port, shared by the overlays ----------------------------------
_ENGINES: dict[int, tuple[GobgpEngine, int]] = {}
_LOCK = asyncio.Lock()


async def acquire(settings: EngineSettings, subscriber: Subscriber) -> GobgpEngine:
    """The running engine for `settings.api_port` (started if none), with `subscriber` added."""
    async with _LOCK:
        found = _ENGINES.get(settings.api_port)
        if found is not None:
            engine, users = found
            if engine.settings != settings:
                raise BackendError(f"evpn: gobgpd on API port {settings.api_port} already runs with other settings "
                                   f"({engine.settings}); evpn overlays sharing it need the same evpn/asn, "
                                   "evpn/router_id, evpn/neighbors and timers, or another evpn/api_port")
            engine.subscribers.append(subscriber)
            _ENGINES[settings.api_port] = (engine, users + 1)
            if engine.running:  # what the watch told the others before this one came
                for address, state in engine.peers.items():
                    subscriber.engine_peer(address, state)
                subscriber.engine_paths(await engine.best_paths())
                await subscriber.engine_ready(engine)
            return engine
        engine = GobgpEngine(settings)
        engine.subscribers.append(subscriber)
        await engine.start()
        _ENGINES[settings.api_port] = (engine, 1)
        return engine


async def release(engine: GobgpEngine, subscriber: Subscriber) -> None:
    async with _LOCK:
        if subscriber in engine.subscribers:
            engine.subscribers.remove(subscriber)
        found = _ENGINES.get(engine.settings.api_port)
        if found is None or found[0] is not engine:
            await engine.stop()
            return
        users = found[1] - 1
        if users <= 0:
            del _ENGINES[engine.settings.api_port]
            await engine.stop()
        else:
            _ENGINES[engine.settings.api_port] = (engine, users)
