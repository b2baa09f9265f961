"""The reference mapping server: its API, its store, and the OpenAPI document that describes it."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
import yaml

from test_http_support import MAC1, MAC2, MAC3, VNI, Served, seed_mapping
from varpd.mapping_server.app import ROUTES, make_app
from varpd.mapping_server.store import Conflict, MappingStore, ReadOnly
from varpd.mapping_server.wire import WireError, record_from_json, record_to_json

DOC = Path(__file__).resolve().parents[3] / "docs" / "mapping-api.yaml"


def _store(**kw) -> MappingStore:
    store = MappingStore(VNI, **kw)
    store.replace(seed_mapping())
    return store


@pytest.fixture
async def server():
    store = _store()
    served = await Served(lambda: make_app(store, token="s3cret", keepalive=0.2)).start()
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer s3cret"}) as session:
        yield served, store, session
    await served.stop()


def test_openapi_document_lists_exactly_the_registered_routes():
    doc = yaml.safe_load(DOC.read_text())
    assert str(doc["openapi"]).startswith("3.0")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops
                  if method in ("get", "put", "post", "delete", "patch", "head")}
    app = make_app(MappingStore(VNI))
    registered = {(r.method, r.resource.canonical) for r in app.router.routes()}
    assert registered == documented
    assert registered == {(m, p) for m, p, _ in ROUTES}


def test_wire_roundtrip_and_errors():
    for rec in seed_mapping().by_mac.values():
        assert record_from_json(json.loads(json.dumps(record_to_json(rec)))) == rec
    with pytest.raises(WireError, match="port"):
        record_from_json({"ip": "192.0.2.1", "port": "x"}, MAC1)
    with pytest.raises(WireError, match="missing required field 'ip'"):
        record_from_json({"port": 4789}, MAC1)
    with pytest.raises(WireError, match="not the requested"):
        record_from_json({"mac": MAC2, "ip": "192.0.2.1", "port": 4789}, MAC1)
    with pytest.raises(WireError, match="unknown field"):
        record_from_json({"mac": MAC2, "ip": "192.0.2.1", "port": 4789, "vlan": 3})
    with pytest.raises(WireError, match="JSON object"):
        record_from_json([1, 2])


async def test_get_put_delete_and_ips(server):
    served, store, s = server
    base = f"{served.url}/v1/overlays/{VNI}"
    async with s.get(f"{base}/macs/DE-AD-BE-EF-00-01") as r:
        assert r.status == 200
        assert await r.json() == {"mac": MAC2, "ip": "192.0.2.2", "port": 4789, "arp": "10.55.55.3",
                                  "ndp": "fe80::4", "dhcp-proxy": MAC1}
    async with s.get(f"{base}/ips/fe80::4") as r:
        assert r.status == 200 and (await r.json())["mac"] == MAC2
    async with s.get(f"{base}/ips/10.55.55.4") as r:
        assert (await r.json())["mac"] == MAC3
    for url, status in ((f"{base}/macs/de:ad:be:ef:00:99", 404), (f"{base}/ips/10.9.9.9", 404),
                        (f"{base}/macs/nope", 400), (f"{base}/ips/nope", 400),
                        (f"{served.url}/v1/overlays/24/macs/{MAC1}", 404)):
        async with s.get(url) as r:
            assert r.status == status and "error" in await r.json(), url
    new = {"ip": "192.0.2.9", "port": 4789, "arp": "10.55.55.9"}
    async with s.put(f"{base}/macs/de:ad:be:ef:00:09", json=new) as r:
        assert r.status == 201 and (await r.json())["mac"] == "de:ad:be:ef:00:09"
    async with s.put(f"{base}/macs/de:ad:be:ef:00:09", json={**new, "port": 4790}) as r:
        assert r.status == 200
    async with s.put(f"{base}/macs/de:ad:be:ef:00:0a", json={**new, "ip": "192.0.2.10"}) as r:
        assert r.status == 409 and "already claimed" in (await r.json())["error"]
    async with s.put(f"{base}/macs/de:ad:be:ef:00:0a", json={"ip": "192.0.2.10", "port": "x"}) as r:
        assert r.status == 400 and "port" in (await r.json())["error"]
    async with s.put(f"{base}/macs/de:ad:be:ef:00:0a", data=b"{nope") as r:
        assert r.status == 400
    async with s.put(f"{base}/macs/de:ad:be:ef:00:0a", data=b"[" * 5000 + b"]" * 5000) as r:
        assert r.status == 400 and "nested too deeply" in (await r.json())["error"]
    async with s.delete(f"{base}/macs/de:ad:be:ef:00:09") as r:
        assert r.status == 204
    async with s.delete(f"{base}/macs/de:ad:be:ef:00:09") as r:
        assert r.status == 404
    async with s.get(f"{base}/ips/10.55.55.9") as r:
        assert r.status == 404


async def test_token_is_required(server):
    served, _, _ = server
    url = f"{served.url}/v1/overlays/{VNI}/macs/{MAC1}"
    async with aiohttp.ClientSession() as anon:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            async with anon.get(url, headers=headers) as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        async with anon.get(f"{served.url}/v1/health") as r:  # liveness needs no token
            assert r.status == 200 and (await r.json())["records"] == 3


async def _read_events(resp, n: int) -> list[tuple[str | None, str, dict]]:
    out, cur = [], {}
    while len(out) < n:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
        if line.startswith(":"):
            continue
        if not line:
            if cur:
                out.append((cur.get("id"), cur["event"], json.loads(cur["data"])))
            cur = {}
            continue
        k, _, v = line.partition(": ")
        cur[k] = v
    return out


async def test_events_stream_resume_and_resync(server):
    served, store, s = server
    url = f"{served.url}/v1/overlays/{VNI}/events"
    async with s.get(url) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        (hid, kind, data), = await _read_events(r, 1)
        assert kind == "hello" and data["vni"] == VNI and hid == store.position
        store.delete(MAC3)
        (rid, kind, data), = await _read_events(r, 1)
        assert kind == "remove" and data["mac"] == MAC3 and data["ip"] == "2001:db8::3"
    # missed while away: replayed from Last-Event-ID
    store.put(record_from_json({"ip": "192.0.2.7", "port": 4789}, MAC3))
    async with s.get(url, headers={"Last-Event-ID": rid}) as r:
        events = await _read_events(r, 2)
        assert [e[1] for e in events] == ["hello", "upsert"] and events[0][0] is None
        assert events[1][2]["ip"] == "192.0.2.7"
    async with s.get(url, headers={"Last-Event-ID": "otherepoch:5"}) as r:
        events = await _read_events(r, 2)
        assert [e[1] for e in events] == ["hello", "resync"] and events[1][0] == store.position


async def test_store_hosts_file_reload_and_read_only(tmp_path):
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({MAC1: {"ip": "192.0.2.1", "port": 4789, "arp": "10.55.55.2"}}))
    store = MappingStore(VNI, hosts=hosts, reload_interval=0.05)
    await store.start()
    try:
        sub = store.subscribe(store.position)
        assert store.get(MAC1).dest.port == 4789
        hosts.write_text(json.dumps({MAC1: {"ip": "192.0.2.1", "port": 4790, "arp": "10.55.55.2"},
                                     MAC2: {"ip": "192.0.2.2", "port": 4789}}))
        got = [await asyncio.wait_for(sub.queue.get(), 3) for _ in range(2)]
        assert sorted((e.kind, e.record.mac) for e in got) == [("upsert", MAC1), ("upsert", MAC2)]
        hosts.write_text("{bad json")
        await asyncio.sleep(0.2)
        assert len(store) == 2  # the last good table stays
        with pytest.raises(Conflict):
            store.put(record_from_json({"ip": "192.0.2.3", "port": 1, "arp": "10.55.55.2"}, MAC3))
    finally:
        await store.stop()
    ro = MappingStore(VNI, writable=False)
    with pytest.raises(ReadOnly):
        ro.put(record_from_json({"ip": "192.0.2.3", "port": 1}, MAC3))
