"""The svp backend against the reference SVP server, over real loopback TCP (no mocks)."""
from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from ipaddress import IPv4Address, IPv6Address

import pytest

from test_svp_support import MAC1, MAC2, MAC3, VNI, make_backend, seed_mapping, start_server, wait_until
from varpd.backend.errors import PropertyError
from varpd.backend.properties import resolve
from varpd.model import Destination, Mapping, MappingRecord
from varpd_plugins.svp import wire
from varpd_plugins.svp.backend import SvpBackend
from varpd_plugins.svp.client import SvpClient, SvpConnectionLost, SvpUnavailable

HOST1 = IPv4Address("192.0.2.1")
NEW_MAC = "de:ad:be:ef:00:09"


def moved(mapping: Mapping, mac: str, **changes) -> Mapping:
    """`mapping` with `mac`'s record changed."""
    return Mapping.of([dataclasses.replace(r, **changes) if r.mac == mac else r for r in mapping.by_mac.values()])


@pytest.fixture
async def server():
    srv = await start_server()
    yield srv
    await srv.stop()


@pytest.fixture
async def backend(server):
    b = make_backend(server.address[1])
    await b.start()
    yield b
    await b.stop()


async def test_vl2_lookup_answers_the_servers_destination(server, backend):
    assert await backend.lookup(MAC2) == Destination(IPv4Address("192.0.2.2"), 4789)
    assert await backend.lookup("02:00:00:00:00:99") is None  # NOTFOUND
    assert backend.degraded is None


async def test_another_vnetid_is_not_found(server):
    server.vni = VNI + 1  # the backend asks for VNI 23, the server serves 24
    b = make_backend(server.address[1])
    await b.start()
    try:
        assert await b.lookup(MAC2) is None
    finally:
        await b.stop()


async def test_vl3_answers_the_owner_and_primes_the_following_vl2(server, backend):
    assert await backend.arp(IPv4Address("10.55.55.3")) == MAC2
    assert await backend.ndp(IPv6Address("fe80::5")) == MAC3
    asked = server.requests
    assert await backend.lookup(MAC2) == Destination(IPv4Address("192.0.2.2"), 4789)
    assert server.requests == asked, "the VL3_ACK's destination answers the daemon's next lookup"
    assert backend.stats["hint_hits"] == 1
    assert await backend.arp(IPv4Address("10.55.55.99")) is None


async def test_record_carries_the_overlay_ips_seen(server, backend):
    await backend.arp(IPv4Address("10.55.55.3"))
    rec = await backend.record(MAC2)
    assert rec.mac == MAC2 and rec.arp == IPv4Address("10.55.55.3")


async def test_vl2_shootdown_removes_the_mac(server, backend):
    await backend.lookup(MAC2)
    server.set_mapping(moved(seed_mapping(), MAC2, dest=Destination(IPv4Address("192.0.2.3"), 4789)))
    await wait_until(lambda: backend.changes, what="a change from the shootdown log")
    change = backend.changes[0]
    assert [r.mac for r in change.removed] == [MAC2] and not change.upserted
    await wait_until(lambda: server.shootdown.pending(HOST1) == 0, what="LOG_RM of the processed record")
    assert await backend.lookup(MAC2) == Destination(IPv4Address("192.0.2.3"), 4789)


async def test_vl3_shootdown_reprograms_new_and_old_owner(server, backend):
    ip = IPv4Address("10.55.55.4")
    assert await backend.arp(ip) == MAC3
    await backend.lookup(MAC3)
    newer = Mapping.of([r if r.mac != MAC3 else MappingRecord(MAC3, r.dest, None, r.ndp)
                        for r in seed_mapping().by_mac.values()]
                       + [MappingRecord(NEW_MAC, Destination(IPv4Address("192.0.2.2"), 4789), ip, None)])
    server.set_mapping(newer)
    await wait_until(lambda: backend.changes, what="a change from the VL3 record")
    upserted = {r.mac: r for c in backend.changes for r in c.upserted}
    assert upserted[NEW_MAC].arp == ip and upserted[NEW_MAC].dest == Destination(IPv4Address("192.0.2.2"), 4789)
    assert upserted[MAC3].arp is None, "the old owner is upserted without the IP"
    assert await backend.arp(ip) == NEW_MAC


async def test_records_of_unserved_vnis_are_acknowledged(server, backend):
    server.shootdown._append(HOST1, wire.LogVl2(bytes(16), MAC1, 999))
    await wait_until(lambda: server.shootdown.pending(HOST1) == 0, what="LOG_RM of a record for VNI 999")
    assert not backend.changes


async def test_unreachable_server_degrades_then_recovers():
    probe = await start_server()
    port = probe.address[1]
    await probe.stop()  # a port nobody listens on
    b = make_backend(port)
    await b.start()
    try:
        await wait_until(lambda: b.degraded, what="DEGRADED")
        assert f"127.0.0.1:{port}" in b.degraded and "refused" in b.degraded.lower()
        t0 = asyncio.get_running_loop().time()
        assert await b.lookup(MAC2) is None
        assert asyncio.get_running_loop().time() - t0 < 1.0, "fails at once while down, no timeout pile-up"
        srv = await start_server(port=port)
        try:
            await wait_until(lambda: b.degraded is None, what="ONLINE again")
            assert await b.lookup(MAC2) == Destination(IPv4Address("192.0.2.2"), 4789)
            assert b.statuses[-1] is None
        finally:
            await srv.stop()
    finally:
        await b.stop()


async def test_server_restart_loses_no_update(server, backend):
    """A change made while the server was down (its log lost with it) still reaches the backend."""
    port = server.address[1]
    assert await backend.lookup(MAC2) == Destination(IPv4Address("192.0.2.2"), 4789)
    assert await backend.arp(IPv4Address("10.55.55.4")) == MAC3
    await server.stop()
    await wait_until(lambda: backend.degraded, what="DEGRADED after the server went away")
    newer = moved(seed_mapping(), MAC2, dest=Destination(IPv4Address("192.0.2.3"), 4790))
    restarted = await start_server(port=port, mapping=newer)
    try:
        await wait_until(lambda: backend.changes, what="the resync after reconnecting")
        upserted = {r.mac: r for c in backend.changes for r in c.upserted}
        assert upserted[MAC2].dest == Destination(IPv4Address("192.0.2.3"), 4790)
        assert backend.degraded is None and backend.stats["resyncs"] == 1
    finally:
        await restarted.stop()


async def test_garbage_from_the_server_closes_the_connection():
    """A reply with a bad CRC cannot be trusted or resynchronised: the request fails, the overlay degrades."""
    async def liar(reader, writer):
        head = await reader.readexactly(16)
        hdr = wire.Header.unpack(head)
        await reader.readexactly(hdr.size)
        frame = bytearray(wire.encode(wire.Vl2Ack(wire.Status.OK, 4789, IPv4Address("192.0.2.9")), hdr.id))
        frame[-1] ^= 0xFF
        writer.write(bytes(frame))
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    srv = await asyncio.start_server(liar, "127.0.0.1", 0)
    b = make_backend(srv.sockets[0].getsockname()[1])
    await b.start()
    try:
        assert await b.lookup(MAC2) is None
        await wait_until(lambda: b.degraded, what="DEGRADED")
        assert "protocol error" in b.degraded and "CRC" in b.degraded
    finally:
        await b.stop()
        srv.close()


async def test_replies_are_matched_by_id_in_any_order():
    async def reverse(reader, writer):
        frames = []
        for _ in range(2):
            hdr = wire.Header.unpack(await reader.readexactly(16))
            req = wire.decode_payload(hdr, await reader.readexactly(hdr.size))
            frames.append(wire.encode(wire.Vl2Ack(wire.Status.OK, 4000 + int(req.mac[-1]), HOST1), hdr.id))
        for f in reversed(frames):
            writer.write(f)
        await writer.drain()
        await reader.read()

    srv = await asyncio.start_server(reverse, "127.0.0.1", 0)
    client = SvpClient("127.0.0.1", srv.sockets[0].getsockname()[1])
    try:
        a, b = await asyncio.gather(client.request(wire.Vl2Req("02:00:00:00:00:01", VNI)),
                                    client.request(wire.Vl2Req("02:00:00:00:00:02", VNI)))
        assert (a.port, b.port) == (4001, 4002)
    finally:
        await client.close()
        srv.close()


async def test_every_resolved_address_is_tried():
    srv = await start_server()

    class TwoAddresses(SvpClient):
        async def _resolve(self):
            return [("127.0.0.2", self.port), ("127.0.0.1", self.port)]  # nothing listens on the first

    client = TwoAddresses("svp.example", srv.address[1])
    try:
        pong = await client.request(wire.Ping())
        assert isinstance(pong, wire.Pong) and client.peer == f"127.0.0.1:{srv.address[1]}"
    finally:
        await client.close()
        await srv.stop()


async def test_a_closed_client_fails_requests():
    client = SvpClient("127.0.0.1", 9)
    await client.close()
    with pytest.raises(SvpUnavailable):
        await client.request(wire.Ping())


async def test_lost_connection_fails_outstanding_requests():
    async def hang_up(reader, writer):
        await reader.readexactly(16)
        writer.close()

    srv = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    client = SvpClient("127.0.0.1", srv.sockets[0].getsockname()[1])
    try:
        with pytest.raises(SvpConnectionLost):
            await client.request(wire.Ping())
    finally:
        await client.close()
        srv.close()


def test_properties_are_checked():
    base = {"svp/host": "192.0.2.254", "svp/underlay_ip": "192.0.2.1"}
    values = resolve(SvpBackend.properties, base)
    assert values["svp/port"] == 1296 and values["svp/underlay_port"] == 1339
    with pytest.raises(PropertyError, match="svp/host"):
        resolve(SvpBackend.properties, {"svp/underlay_ip": "192.0.2.1"})
    with pytest.raises(PropertyError, match="svp/port"):
        resolve(SvpBackend.properties, {**base, "svp/port": "70000"})
    from varpd.backend.base import OverlayContext

    ctx = OverlayContext("vx23", VNI, HOST1, 4789)
    with pytest.raises(PropertyError, match="svp/underlay_ip"):
        SvpBackend(ctx, resolve(SvpBackend.properties, {**base, "svp/underlay_ip": "239.1.1.1"}))
    with pytest.raises(PropertyError, match="svp/log_interval"):
        SvpBackend(ctx, resolve(SvpBackend.properties, {**base, "svp/log_interval": "soon"}))
    with pytest.raises(PropertyError, match="svp/ca"):
        SvpBackend(ctx, resolve(SvpBackend.properties, {**base, "svp/ca": "relative.pem"}))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("svp-tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


async def test_tls_with_a_verified_server(tls_files):
    import ssl

    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    srv = await start_server(ssl=ctx)
    b = make_backend(srv.address[1], **{"svp/ca": str(cert)})
    await b.start()
    try:
        assert b.tls
        assert await b.lookup(MAC2) == Destination(IPv4Address("192.0.2.2"), 4789)
    finally:
        await b.stop()
    plain = make_backend(srv.address[1], **{"svp/tls": "true"})  # system CAs do not know our self-signed cert
    await plain.start()
    try:
        assert await plain.lookup(MAC2) is None
        await wait_until(lambda: plain.degraded, what="DEGRADED on an unverifiable certificate")
        assert "TLS" in plain.degraded or "certificate" in plain.degraded.lower()
    finally:
        await plain.stop()
        await srv.stop()
