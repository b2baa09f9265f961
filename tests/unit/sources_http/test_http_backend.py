"""The http backend against the real reference server, in process on loopback."""
from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from test_http_support import MAC1, MAC2, MAC3, VNI, Served, make_backend, seed_mapping, wait_until
from varpd.backend.errors import BackendError, PropertyError
from varpd.backend.properties import resolve
from varpd.mapping_server.app import make_app
from varpd.mapping_server.store import MappingStore
from varpd.mapping_server.wire import record_from_json
from varpd.model import Destination, MappingChange
from varpd_plugins.http import HttpBackend

TOKEN = "t0ken"


def _store() -> MappingStore:
    store = MappingStore(VNI)
    store.replace(seed_mapping())
    return store


@pytest.fixture
async def served():
    store = _store()
    served = await Served(lambda: make_app(store, token=TOKEN, keepalive=0.2)).start()
    served.store = store
    yield served
    await served.stop()


@pytest.fixture
async def backend(served):
    b = make_backend(served.url, token=TOKEN)
    b.changes, b.statuses = [], []
    b.add_listener(b.changes.append)
    b.add_status_listener(b.statuses.append)
    await b.start()
    yield b
    await b.stop()


def test_properties():
    assert not HttpBackend.enumerable
    v = resolve(HttpBackend.properties, {"http/url": "https://m.example/api/"})
    assert (v["http/timeout"], v["http/retries"], v["http/insecure"], v["http/events"]) == (2, 2, False, True)
    b = make_backend("https://m.example/api/")
    assert b.base == "https://m.example/api" and b.timeout == 2.0
    assert str(b._root / "macs" / MAC1) == f"https://m.example/api/v1/overlays/{VNI}/macs/{MAC1}"
    for props, name in (({"http/url": "ftp://x"}, "http/url"), ({"http/url": "localhost:80"}, "http/url"),
                        ({"http/url": "http://x", "http/timeout": "0"}, "http/timeout"),
                        ({"http/url": "http://x", "http/timeout": "fast"}, "http/timeout"),
                        ({"http/url": "http://x", "http/token": "a", "http/token_file": "/t"}, "http/token_file"),
                        ({"http/url": "http://x", "http/ca": "rel.pem"}, "http/ca"),
                        ({"http/url": "http://x", "http/ca": "/ca.pem", "http/insecure": "true"}, "http/insecure")):
        with pytest.raises(PropertyError) as exc:
            make_backend(**{"url": props.pop("http/url")}, **props)
        assert exc.value.name == name
    with pytest.raises(PropertyError):
        resolve(HttpBackend.properties, {})  # http/url is required


async def test_lookups(backend):
    assert await backend.lookup(MAC2) == Destination(ip_address("192.0.2.2"), 4789)
    assert await backend.lookup(MAC3) == Destination(ip_address("2001:db8::3"), 4790)
    rec = await backend.record(MAC2)
    assert rec.arp == IPv4Address("10.55.55.3") and rec.ndp == IPv6Address("fe80::4") and rec.dhcp_proxy == MAC1
    assert await backend.dhcp_proxy(MAC2) == MAC1
    assert await backend.arp(IPv4Address("10.55.55.3")) == MAC2
    assert await backend.ndp(IPv6Address("fe80::3")) == MAC1
    assert await backend.arp(IPv4Address("10.55.55.4")) == MAC3
    # 404 is "unknown": None, and not a failure
    assert await backend.lookup("de:ad:be:ef:00:99") is None
    assert await backend.arp(IPv4Address("10.9.9.9")) is None
    assert await backend.ndp(IPv6Address("fe80::99")) is None
    assert backend.degraded is None and backend.stats["failures"] == 0


async def test_bearer_token_is_enforced(served, caplog):
    caplog.set_level(logging.WARNING, logger="varpd_plugins.http")
    anon = make_backend(served.url, events="false")
    await anon.start()
    try:
        assert await anon.lookup(MAC1) is None
        assert anon.degraded and "401" in anon.degraded
        assert [r for r in caplog.records if "401" in r.getMessage() and served.url in r.getMessage()]
        assert anon.stats["requests"] == 1  # a refused token is not retried
    finally:
        await anon.stop()


async def test_token_file(served, tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    b = make_backend(served.url, token_file=str(path), events="false")
    await b.start()
    try:
        assert await b.lookup(MAC1) is not None
    finally:
        await b.stop()
    missing = make_backend(served.url, token_file=str(tmp_path / "nope"))
    with pytest.raises(BackendError, match="cannot read"):
        await missing.start()


async def test_events_become_mapping_changes(backend, served):
    store = served.store
    await wait_until(lambda: backend.stats["events_hello"], what="the events stream")
    moved = record_from_json({"ip": "192.0.2.2", "port": 4790, "arp": "10.55.55.3", "ndp": "fe80::4"}, MAC2)
    store.put(moved)
    await wait_until(lambda: backend.changes, what="the upsert")
    assert backend.changes.pop() == MappingChange(upserted=(moved,))
    old = store.get(MAC3)
    store.delete(MAC3)
    await wait_until(lambda: backend.changes, what="the removal")
    assert backend.changes.pop() == MappingChange(removed=(old,))  # the whole record: its IPs can be withdrawn


async def test_reconnects_after_server_restart(backend, served):
    await wait_until(lambda: backend.stats["events_hello"] == 1, what="the events stream")
    assert await backend.lookup(MAC2) is not None  # known: re-validated after a resync
    assert await backend.lookup(MAC3) is not None
    await served.stop()
    await wait_until(lambda: backend.stats["events_disconnects"], what="the disconnect")
    # a new server process: new epoch, so the backend is told to resync what it knows
    store = _store()
    moved = record_from_json({"ip": "192.0.2.22", "port": 4789, "arp": "10.55.55.3", "ndp": "fe80::4"}, MAC2)
    store.put(moved)
    gone = store.delete(MAC3)
    served.make_app = lambda: make_app(store, token=TOKEN, keepalive=0.2)
    await served.start()
    await wait_until(lambda: backend.stats["events_hello"] == 2, what="the reconnection")
    await wait_until(lambda: backend.changes, what="the resync")
    assert backend.changes.pop() == MappingChange(upserted=(moved,), removed=(gone,))
    # and the stream is live again
    store.delete(MAC1)
    await wait_until(lambda: backend.changes, what="a live event after the restart")
    assert backend.changes.pop().removed[0].mac == MAC1


async def test_resumes_missed_events_after_a_short_outage(backend, served):
    """Same server state (same epoch): what happened while disconnected is replayed, not resynced."""
    await wait_until(lambda: backend.stats["events_hello"] == 1, what="the events stream")
    await served.stop()
    await wait_until(lambda: backend.stats["events_disconnects"], what="the disconnect")
    moved = record_from_json({"ip": "192.0.2.9", "port": 4789}, MAC1)
    served.store.put(moved)
    await served.start()
    await wait_until(lambda: backend.changes, what="the replayed event")
    assert backend.changes == [MappingChange(upserted=(moved,))]
    assert backend.stats["resyncs"] == 0


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    import shutil
    import subprocess
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


async def test_tls_is_verified(tls_cert, caplog):
    import ssl
    cert, key = tls_cert
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    store = _store()

    class TlsServed(Served):
        async def start(self):
            from aiohttp import web
            self.runner = web.AppRunner(self.make_app(), access_log=None)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx).start()
            self.port = self.runner.addresses[0][1]
            return self

    served = await TlsServed(lambda: make_app(store)).start()
    url = f"https://127.0.0.1:{served.port}"
    try:
        for props, ok in (({"ca": str(cert)}, True), ({}, False), ({"insecure": "true"}, True)):
            b = make_backend(url, events="false", **props)
            await b.start()
            try:
                assert (await b.lookup(MAC1) is not None) is ok, props
                if not ok:
                    assert b.degraded and "certificate" in b.degraded.lower(), b.degraded
            finally:
                await b.stop()
    finally:
        await served.stop()
