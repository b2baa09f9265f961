"""An asyncio SVP server answering from a mapping source: any enumerable backend (files, etcd).

Requests served (varpd_plugins.svp.wire): PING → PONG; VL2_REQ → VL2_ACK;
VL3_REQ → VL3_ACK (BADL3TYPE for an unknown type); LOG_REQ → LOG_ACK with the
requester's shootdown records that fit its byte count; LOG_RM → LOG_RM_ACK.
A request for another vnetid is NOTFOUND.  A frame that is not valid SVP, or
an op the server does not serve (BULK_REQ, replies), closes that connection
with one log line.

Connections are bounded so that clients cannot pin memory: at most
`max_connections` at once (more are closed at once, logged at most every 10 s); one
that starts no request for `idle_timeout` seconds is closed (a client closes its own
after 30 s idle); a frame, once begun, must arrive whole within `frame_timeout`
seconds and a reply be taken within as long; a request payload over
`MAX_REQUEST` bytes (no request comes near it: a LOG_RM of 4096 ids) closes the
connection before anything is buffered.  The source is the same backend code the daemon uses, so
a hosts.json is re-read and checked exactly as `-s files` does (a bad edit
keeps the last good mapping) and etcd is followed by its watch; each change
the source emits feeds the shootdown log (varpd.svp_server.shootdown).
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_mod
from ipaddress import IPv4Address

from varpd.backend.base import Backend, OverlayContext
from varpd.backend.properties import resolve
from varpd.backend.registry import load as load_backend
from varpd.model import Mapping, MappingChange
from varpd.svp_server.shootdown import ShootdownLog
from varpd_plugins.http_client import RateLimitedLog
from varpd_plugins.svp import wire
from varpd_plugins.svp.wire import L3Type, Status

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 1024
IDLE_TIMEOUT = 120.0
FRAME_TIMEOUT = 10.0
MAX_REQUEST = 64 * 1024


def make_source(vni: int, backend: str, props: dict[str, str]) -> Backend:
    """An enumerable backend to serve from (PropertyError / PluginNotFound / ConfigError on bad input)."""
    cls = load_backend(backend)
    if not cls.enumerable:
        from varpd.backend.errors import ConfigError

        raise ConfigError(f"backend {backend!r} cannot list its mapping: an SVP server needs files or etcd")
    ctx = OverlayContext("svp-server", vni, IPv4Address("0.0.0.0"), 0)
    return cls(ctx, resolve(cls.properties, props))


class SvpServer:
    def __init__(self, vni: int, *, source: Backend | None = None, mapping: Mapping | None = None,
                 ssl: ssl_mod.SSLContext | None = None, max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT, frame_timeout: float = FRAME_TIMEOUT) -> None:
        self.vni = vni
        self.source = source
        self.mapping = mapping if mapping is not None else Mapping()
        self.ssl = ssl
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.shootdown = ShootdownLog(vni)
        self.shootdown.serving(self.mapping)
        self._say = RateLimitedLog(log)
        self.refused = 0  # connections closed at once: the cap was reached
        self.requests = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.address: tuple[str, int] | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = wire.DEFAULT_PORT) -> int:
        """Start the source (ConfigError if its mapping is bad), listen; the bound port."""
        if self.source is not None:
            await self.source.start()
            self.mapping = self.source.snapshot() or Mapping()
            self.shootdown.serving(self.mapping)
            self.source.add_listener(self._on_change)
            self.source.add_status_listener(self._on_status)
            log.info("svp-server vni=%d event=loaded source=%s records=%d", self.vni, self.source.name,
                     len(self.mapping))
        self._server = await asyncio.start_server(self._handle, host, port, ssl=self.ssl, reuse_address=True)
        sock = self._server.sockets[0].getsockname()
        self.address = (sock[0], sock[1])
        log.info("svp-server vni=%d event=listening addr=%s:%d tls=%s records=%d", self.vni, host, sock[1],
                 self.ssl is not None, len(self.mapping))
        return sock[1]

    async def stop(self) -> None:
        if self.source is not None:
            await self.source.stop()
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- the mapping ----------------------------------------------------------------------
    def set_mapping(self, newer: Mapping, change: MappingChange | None = None) -> int:
        """Serve `newer` from now on; the shootdown records appended (`change`: what differs, if known)."""
        old, self.mapping = self.mapping, newer
        return self.shootdown.changed(old, newer, change)

    def _on_change(self, change: MappingChange) -> None:
        newer = self.source.snapshot() if self.source is not None else None
        if newer is not None:
            n = self.set_mapping(newer, None if change.full_resync else change)
            log.info("svp-server vni=%d event=mapping-changed records=%d upserted=%d removed=%d "
                     "shootdown-records=%d", self.vni, len(newer), len(change.upserted), len(change.removed), n)

    def _on_status(self, reason: str | None) -> None:
        if reason is None:
            log.info("svp-server vni=%d event=source-recovered", self.vni)
        else:
            log.warning("svp-server vni=%d event=source-degraded reason=%s; serving the last good mapping",
                        self.vni, reason)

    # -- connections ------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        if len(self._conns) >= self.max_connections:
            self.refused += 1
            self._say(logging.WARNING, "cap", "svp-server event=connection-refused peer=%s reason=%d connections "
                      "open, the cap", peer, len(self._conns))
            writer.close()
            return
        task = asyncio.current_task()
        self._conns.add(task)
        self._writers.add(writer)
        log.debug("svp-server event=connected peer=%s", peer)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        first = await reader.readexactly(1)
                except TimeoutError:
                    log.debug("svp-server event=idle-close peer=%s idle=%gs", peer, self.idle_timeout)
                    break
                async with asyncio.timeout(self.frame_timeout):
                    header = wire.Header.unpack(first + await reader.readexactly(wire.HEADER_SIZE - 1))
                    if header.size > MAX_REQUEST:
                        raise wire.SvpProtocolError("size", f"request payload of {header.size} bytes exceeds "
                                                    f"{MAX_REQUEST}")
                    payload = await reader.readexactly(header.size)
                msg = wire.decode_payload(header, payload)
                reply = self.answer(msg)
                if reply is None:
                    raise wire.SvpProtocolError("op", f"op 0x{header.op:02x} is not a request this server serves")
                self.requests += 1
                writer.write(wire.encode(reply, header.id))
                async with asyncio.timeout(self.frame_timeout):
                    await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        except TimeoutError:
            self._say(logging.WARNING, "slow", "svp-server event=slow-peer peer=%s a frame not sent or a reply not "
                      "taken within %gs; closing", peer, self.frame_timeout)
        except wire.SvpProtocolError as exc:
            log.warning("svp-server event=protocol-error peer=%s kind=%s error=%s; closing", peer, exc.kind, exc)
        except (OSError, ConnectionError, ssl_mod.SSLError) as exc:
            log.debug("svp-server event=connection-error peer=%s error=%s", peer, exc)
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            self._writers.discard(writer)
            writer.close()
            log.debug("svp-server event=disconnected peer=%s", peer)

    def answer(self, msg: wire.Message) -> wire.Message | None:
        """The reply to one request (None: not a request this server serves)."""
        if isinstance(msg, wire.Ping):
            return wire.Pong()
        if isinstance(msg, wire.Vl2Req):
            rec = self.mapping.by_mac.get(msg.mac) if msg.vnetid == self.vni else None
            if rec is None:
                return wire.Vl2Ack(Status.NOTFOUND)
            return wire.Vl2Ack(Status.OK, rec.dest.port, rec.dest.ip)
        if isinstance(msg, wire.Vl3Req):
            if msg.l3type not in (L3Type.IP, L3Type.IPV6) or (msg.l3type == L3Type.IP) != (msg.ip.version == 4):
                return wire.Vl3Ack(Status.BADL3TYPE)
            rec = self.mapping.by_ip.get(msg.ip) if msg.vnetid == self.vni else None
            if rec is None:
                return wire.Vl3Ack(Status.NOTFOUND)
            return wire.Vl3Ack(Status.OK, rec.mac, rec.dest.port, rec.dest.ip)
        if isinstance(msg, wire.LogReq):
            self.shootdown.seen(msg.ip)
            return wire.LogAck(Status.OK, self.shootdown.fetch(msg.ip, msg.count))
        if isinstance(msg, wire.LogRm):
            self.shootdown.remove(msg.ids)
            return wire.LogRmAck(Status.OK)
        return None
