"""The svp server and client against hostile peers: nothing a peer sends pins memory or the loop.

The server closes idle and half-sent connections, caps how many are open and how large a
request may be, and keeps a log only for the mapping's VTEPs and a bounded set of other
recent requesters. The client refuses a reply larger than its request allows and backs off
from a server that breaks every connection. The memory test runs the server in a
subprocess under RLIMIT_AS, so a regression fails instead of exhausting the machine.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from ipaddress import IPv4Address

import pytest

from test_svp_support import MAC2, VNI, hosts_json, make_backend, seed_mapping, start_server, wait_until
from varpd.model import Destination, Mapping
from varpd.svp_server.shootdown import ShootdownLog
from varpd_plugins.svp import client as client_mod
from varpd_plugins.svp import wire
from varpd_plugins.svp.client import SvpClient, SvpConnectionLost


async def _eof_within(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            return await reader.read(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


# -- server: connections -----------------------------------------------------------------
async def test_idle_and_half_sent_connections_are_closed():
    srv = await start_server(idle_timeout=0.3, frame_timeout=0.3)
    port = srv.address[1]
    try:
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
        half_r, half_w = await asyncio.open_connection("127.0.0.1", port)
        frame = wire.encode(wire.Ping(), 7)
        half_w.write(frame[:10])  # a header begun, never finished
        busy_r, busy_w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(4):  # a connection in use is not idle
            busy_w.write(frame)
            assert len(await busy_r.readexactly(16)) == 16
            await asyncio.sleep(0.15)
        assert await _eof_within(idle_r, 3) and await _eof_within(half_r, 3)
        busy_w.write(frame)
        assert len(await busy_r.readexactly(16)) == 16
        for w in (idle_w, half_w, busy_w):
            w.close()
    finally:
        await srv.stop()


async def test_connections_beyond_the_cap_are_closed_at_once_and_the_others_served():
    srv = await start_server(max_connections=3)
    try:
        conns = [await asyncio.open_connection("127.0.0.1", srv.address[1]) for _ in range(5)]
        await asyncio.sleep(0.1)
        for r, w in conns[3:]:
            assert await _eof_within(r, 2)
        for i, (r, w) in enumerate(conns[:3]):
            w.write(wire.encode(wire.Ping(), i))
            hdr = wire.Header.unpack(await r.readexactly(16))
            assert hdr.op == wire.Op.PONG and hdr.id == i
        assert srv.refused == 2
        for _, w in conns:
            w.close()
    finally:
        await srv.stop()


async def test_an_oversized_request_is_refused_before_its_payload_is_buffered():
    srv = await start_server()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", srv.address[1])
        w.write(wire.Header(wire.Op.LOG_RM, 1 << 20, 1).pack() + b"\0" * 1000)
        assert await _eof_within(r, 2)
        w.close()
    finally:
        await srv.stop()


_CHILD = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
from varpd.svp_server.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_300_half_sent_megabyte_frames_do_not_grow_the_server(tmp_path):
    """300 connections each announcing a 1 MiB request and sending half of it: the server (under a
    memory cap) refuses them at the header instead of buffering 150 MB, and keeps answering."""
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps(hosts_json()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cap = 1 << 30  # address space, not RSS: an idle server maps about 400 MB here (threads, libraries)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(cap), "--hosts", str(hosts), "--vni", str(VNI),
                             "--listen", f"127.0.0.1:{port}", "--log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the svp server did not start"
                time.sleep(0.1)
        before = _rss(proc.pid)
        chunk = b"\0" * (512 * 1024)
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setblocking(False)
            try:
                s.send(wire.Header(wire.Op.LOG_RM, (1 << 20) - 16, i).pack())
                sent = 0
                while sent < len(chunk):
                    sent += s.send(chunk[sent:sent + 65536])
            except (BlockingIOError, ConnectionError):
                pass  # the server stopped reading (or closed): what we want
            socks.append(s)
        time.sleep(1.0)
        grown = _rss(proc.pid) - before
        assert proc.poll() is None, proc.stderr.read().decode()
        assert grown < 40 * 1024 * 1024, f"the server grew by {grown / 1e6:.0f} MB"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # and still serves
            s.sendall(wire.encode(wire.Ping(), 1))
            assert wire.Header.unpack(s.recv(16)).op == wire.Op.PONG
    finally:
        for s in socks:
            s.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stderr.close()


# -- server: the host table ------------------------------------------------------------------
def test_150k_made_up_requesters_do_not_each_get_a_log():
    """LOG_REQs from 150k addresses, then one move: records for the VTEPs and a bounded set of
    requesters, not 150k copies."""
    log = ShootdownLog(VNI)
    old = seed_mapping()
    log.serving(old)
    for i in range(150_000):
        log.seen(IPv4Address(0x0A000000 + i))  # 10.0.0.0 + i
    new = Mapping.of([dataclasses.replace(r, dest=Destination(IPv4Address("192.0.2.3"), 4789))
                      if r.mac == MAC2 else r for r in old.by_mac.values()])
    n = log.changed(old, new)
    vteps = {r.dest.ip for r in old.by_mac.values()}
    assert n <= len(vteps) + 256, n
    assert len(log.hosts) <= 256
    for vtep in vteps:
        assert log.pending(vtep) == 1  # every VTEP still gets its record
    assert log.pending(IPv4Address(0x0A000000 + 149_999)) == 1  # the latest requesters too
    assert log.pending(IPv4Address("10.0.0.0")) == 0


def test_a_requester_outside_the_mapping_is_forgotten_with_its_log_after_the_ttl():
    now = [0.0]
    log = ShootdownLog(VNI, clock=lambda: now[0], requester_ttl=600, max_per_requester=4)
    old = seed_mapping()
    log.serving(old)
    outsider, vtep = IPv4Address("198.51.100.7"), IPv4Address("192.0.2.1")
    log.seen(outsider)
    log.seen(vtep)
    mapping = old
    for port in range(5000, 5006):  # six moves: the outsider's log is capped at 4
        newer = Mapping.of([dataclasses.replace(r, dest=Destination(r.dest.ip, port)) if r.mac == MAC2 else r
                            for r in mapping.by_mac.values()])
        log.changed(mapping, newer)
        mapping = newer
    assert log.pending(outsider) == 4 and log.pending(vtep) == 6
    now[0] = 601.0
    log.seen(IPv4Address("198.51.100.8"))
    assert outsider not in log.hosts and log.pending(outsider) == 0
    assert log.pending(vtep) == 6  # a VTEP's log stays


# -- client ------------------------------------------------------------------------------------
async def test_a_log_ack_larger_than_asked_for_is_refused():
    async def flood(reader, writer):
        hdr = wire.Header.unpack(await reader.readexactly(16))
        await reader.readexactly(hdr.size)
        records = tuple(wire.LogVl2(i.to_bytes(16, "big"), "02:00:00:00:00:01", VNI) for i in range(32767))
        try:
            writer.write(wire.encode(wire.LogAck(wire.Status.OK, records), hdr.id))  # just under wire.MAX_PAYLOAD
            await writer.drain()
            await reader.read()
        except ConnectionError:
            pass
        writer.close()

    srv = await asyncio.start_server(flood, "127.0.0.1", 0)
    client = SvpClient("127.0.0.1", srv.sockets[0].getsockname()[1], backoff=(5, 5))
    try:
        with pytest.raises(SvpConnectionLost, match=r"reply of 1048548 bytes .* which allows 8196"):
            await client.request(wire.LogReq(8192, IPv4Address("192.0.2.1")))
    finally:
        await client.close()
        srv.close()


async def test_backoff_grows_against_a_server_that_breaks_every_connection(monkeypatch):
    """Reset only by a connection on which a request was answered, not by every TCP connect."""
    attempts: list[int] = []
    monkeypatch.setattr(client_mod, "backoff_delay", lambda attempt, first, cap: attempts.append(attempt) or 0.01)
    answer = False

    async def server(reader, writer):
        try:
            hdr = wire.Header.unpack(await reader.readexactly(16))
            await reader.readexactly(hdr.size)
            if answer:
                writer.write(wire.encode(wire.LogAck(wire.Status.OK, ()), hdr.id))
            else:
                writer.write(b"\xff" * 16)  # not SVP
            await writer.drain()
            await asyncio.sleep(0.05)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        writer.close()

    srv = await asyncio.start_server(server, "127.0.0.1", 0)
    b = make_backend(srv.sockets[0].getsockname()[1])
    await b.start()  # each connection sends a LOG_REQ at once (the backend introduces itself)
    try:
        await wait_until(lambda: len(attempts) >= 5, 10, "five reconnections")
        assert attempts[:5] == [0, 1, 2, 3, 4], attempts
        answer = True
        n = len(attempts)
        await wait_until(lambda: len(attempts) >= n + 3, 10, "three more reconnections")
        assert attempts[n + 1:n + 3] == [0, 0], attempts  # each connection answered: no growth
    finally:
        await b.stop()
        srv.close()
