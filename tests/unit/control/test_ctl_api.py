"""The admin HTTP API (varpd.admin.app + routes) on a FakeService, through aiohttp's TestClient."""
from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from varpd.admin.app import MAX_BODY, make_app

GOOD = {"name": "vx7", "vni": 7, "search": "files",
        "properties": {"vxlan/listen_ip": "192.0.2.1", "files/config": "/etc/varpd/hosts.json"}}


@pytest.fixture
async def client(fake):
    async with TestClient(TestServer(make_app(fake))) as c:
        yield c


async def _error(resp, status: int) -> str:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"]
    return body["error"]


# -- health -----------------------------------------------------------------------------
async def test_health_ready_lists_degraded_overlays(client, fake):
    resp = await client.get("/v1/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["ready"] is True
    assert body["overlays"] == 2
    assert body["degraded"] == ["vx42"]
    assert 4.0 <= body["uptime"] < 600


async def test_health_not_ready_and_all_online(client, fake):
    fake.ready = False
    fake.get("vx42").status = "ONLINE"
    body = await (await client.get("/v1/health")).json()
    assert body["ready"] is False
    assert body["degraded"] == []


async def test_health_empty_daemon(empty_fake):
    async with TestClient(TestServer(make_app(empty_fake))) as c:
        body = await (await c.get("/v1/health")).json()
    assert body["ready"] is True and body["overlays"] == 0 and body["degraded"] == []


# -- list / show ------------------------------------------------------------------------
async def test_list_overlays_is_describe_of_each(client, fake):
    resp = await client.get("/v1/overlays")
    assert resp.status == 200
    assert await resp.json() == [rt.describe() for rt in fake.overlays()]


async def test_show_overlay(client, fake):
    resp = await client.get("/v1/overlays/vx23")
    assert resp.status == 200
    body = await resp.json()
    assert body == fake.get("vx23").describe()
    assert body["status"] == "ONLINE" and body["plugin"] == "files" and body["vni"] == 23


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_unknown_overlay_is_404(client, method):
    resp = await client.request(method, "/v1/overlays/x")
    assert resp.status == 404
    assert await resp.json() == {"error": "overlay 'x' not found"}


@pytest.mark.parametrize("path", ["/v1/overlays/x/entries", "/v1/overlays/x/reconcile"])
async def test_entries_and_reconcile_of_unknown_overlay_are_404(client, path):
    method = "GET" if path.endswith("entries") else "POST"
    resp = await client.request(method, path)
    assert resp.status == 404
    assert await resp.json() == {"error": "overlay 'x' not found"}


# -- create -----------------------------------------------------------------------------
async def test_create_returns_201_and_describe(client, fake):
    resp = await client.post("/v1/overlays", json=GOOD)
    assert resp.status == 201
    body = await resp.json()
    assert body == fake.get("vx7").describe()
    assert body["name"] == "vx7" and body["vni"] == 7 and body["mode"] == "push"
    cfg = fake.created[-1]
    assert cfg.name == "vx7" and cfg.persist is True and cfg.mode == "auto" and cfg.encap == "vxlan"
    assert dict(cfg.properties) == GOOD["properties"]
    # and it is listed afterwards
    names = [o["name"] for o in await (await client.get("/v1/overlays")).json()]
    assert names == ["vx23", "vx42", "vx7"]


async def test_create_body_not_json(client, fake):
    resp = await client.post("/v1/overlays", data=b"{name: vx7", headers={"Content-Type": "application/json"})
    msg = await _error(resp, 400)
    assert "JSON" in msg
    assert fake.created == []


async def test_create_empty_body(client, fake):
    msg = await _error(await client.post("/v1/overlays", data=b""), 400)
    assert "empty" in msg
    assert fake.created == []


@pytest.mark.parametrize("body", [[], "vx7", 42, None])
async def test_create_json_not_an_object(client, fake, body):
    await _error(await client.post("/v1/overlays", data=json.dumps(body).encode()), 400)
    assert fake.created == []


@pytest.mark.parametrize("change, field", [
    ({"vni": 99999999}, "vni"),
    ({"vni": -1}, "vni"),
    ({"vni": "many"}, "vni"),
    ({"name": "a-name-too-long-for-ifnamsiz"}, "name"),
    ({"name": "a/b"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "vx 1"}, "name"),
    ({"mode": "sometimes"}, "mode"),
    ({"encap": "geneve"}, "encap"),
    ({"bridge": "br/0"}, "bridge"),
    ({"unexpected": 1}, "unexpected"),
])
async def test_create_invalid_field_is_400_naming_it(client, fake, change, field):
    resp = await client.post("/v1/overlays", json={**GOOD, **change})
    msg = await _error(resp, 400)
    assert msg.startswith(f"{field}: "), msg
    assert fake.created == []


@pytest.mark.parametrize("missing", ["name", "vni", "search"])
async def test_create_missing_required_field(client, fake, missing):
    body = {k: v for k, v in GOOD.items() if k != missing}
    msg = await _error(await client.post("/v1/overlays", json=body), 400)
    assert missing in msg


async def test_create_duplicate_name_is_409(client):
    msg = await _error(await client.post("/v1/overlays", json={**GOOD, "name": "vx23"}), 409)
    assert "vx23" in msg and "exists" in msg


async def test_create_duplicate_vni_is_409(client):
    msg = await _error(await client.post("/v1/overlays", json={**GOOD, "vni": 42}), 409)
    assert "VNI 42" in msg


async def test_create_unknown_plugin_is_400_with_message(client, fake):
    msg = await _error(await client.post("/v1/overlays", json={**GOOD, "search": "nope"}), 400)
    assert msg == "unknown plugin 'nope' (installed: direct, files)"
    assert "vx7" not in [o.name for o in fake.overlays()]


async def test_create_unknown_property_is_400_with_message(client):
    body = {**GOOD, "properties": {**GOOD["properties"], "files/nope": "1"}}
    msg = await _error(await client.post("/v1/overlays", json=body), 400)
    assert msg == "property files/nope: unknown property"


async def test_create_body_over_64k_is_413(client, fake):
    body = {**GOOD, "properties": {"files/config": "x" * (MAX_BODY + 1)}}
    resp = await client.post("/v1/overlays", json=body)
    assert resp.status == 413
    assert fake.created == []
    # and the server is still fine
    assert (await client.get("/v1/health")).status == 200


async def test_create_body_just_under_limit_is_accepted(client, fake):
    raw = json.dumps({**GOOD, "properties": {**GOOD["properties"], "pad": ""}})
    pad = MAX_BODY - len(raw.encode())
    body = {**GOOD, "properties": {**GOOD["properties"], "pad": "x" * pad}}
    data = json.dumps(body).encode()
    assert len(data) == MAX_BODY
    resp = await client.post("/v1/overlays", data=data)
    assert resp.status == 201
    assert fake.created[-1].properties["pad"] == "x" * pad


# -- delete / entries / reconcile -------------------------------------------------------
async def test_delete_is_204_then_404(client, fake):
    resp = await client.delete("/v1/overlays/vx23")
    assert resp.status == 204
    assert await resp.read() == b""
    assert fake.deleted == ["vx23"]
    assert (await client.get("/v1/overlays/vx23")).status == 404
    assert [o["name"] for o in await (await client.get("/v1/overlays")).json()] == ["vx42"]


async def test_entries(client, fake):
    resp = await client.get("/v1/overlays/vx23/entries")
    assert resp.status == 200
    body = await resp.json()
    assert body == await fake.get("vx23").kernel_entries()
    assert {"kind": "fdb", "target": "02:08:20:00:00:02", "destination": "[2001:db8::2]:4789",
            "origin": "push"} in body


async def test_entries_empty(client):
    resp = await client.get("/v1/overlays/vx42/entries")
    assert resp.status == 200
    assert await resp.json() == []


async def test_reconcile(client, fake):
    resp = await client.post("/v1/overlays/vx23/reconcile")
    assert resp.status == 200
    assert await resp.json() == {"fdb_added": 1, "fdb_removed": 0, "neigh_added": 2, "neigh_removed": 0}
    assert fake.reconciled == ["vx23"]


async def test_wrong_method_is_405(client):
    assert (await client.put("/v1/overlays/vx23")).status == 405


# -- the unexpected ---------------------------------------------------------------------
@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/overlays"), ("GET", "/v1/overlays/vx23"), ("DELETE", "/v1/overlays/vx23"),
    ("POST", "/v1/overlays/vx23/reconcile"), ("GET", "/v1/health"),
])
async def test_unexpected_exception_is_500_and_server_keeps_serving(client, fake, method, path):
    fake.fail_next = RuntimeError("netlink said no")
    resp = await client.request(method, path)
    assert resp.status == 500
    assert await resp.json() == {"error": "RuntimeError: netlink said no"}
    # the next request is answered normally
    resp = await client.get("/v1/overlays/vx23")
    assert resp.status == 200
    assert (await resp.json())["name"] == "vx23"


async def test_unexpected_exception_in_create_is_500(client, fake):
    fake.fail_next = OSError(105, "No buffer space available")
    msg = await _error(await client.post("/v1/overlays", json=GOOD), 500)
    assert msg.startswith("OSError: ")
    assert (await client.post("/v1/overlays", json=GOOD)).status == 201


async def test_unexpected_multiline_exception_is_one_line(client, fake):
    fake.fail_next = RuntimeError("first line\nsecond line")
    await _error(await client.get("/v1/overlays"), 500)
