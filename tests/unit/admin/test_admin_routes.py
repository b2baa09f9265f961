"""Every admin route (varpd.admin.app + routes) on a FakeService through aiohttp's TestClient:
status codes, bodies, one-line JSON errors."""
from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fake_service import FakeService
from varpd.admin.app import MAX_BODY, make_app

JSON = {"Content-Type": "application/json"}
NEW = {"name": "vx7", "vni": 7, "search": "files",
       "properties": {"vxlan/listen_ip": "192.0.2.1", "files/config": "/etc/varpd/hosts.json"}}


async def error_of(resp, status: int) -> str:
    """The message of a JSON error answer: {"error": "<one non-empty line>"}."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert list(body) == ["error"]
    assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"]
    return body["error"]


# -- health -----------------------------------------------------------------------------
async def test_health_reports_readiness_count_and_uptime(client, service):
    resp = await client.get("/v1/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["ready"] is True and body["overlays"] == 2 and body["degraded"] == ["vx42"]
    assert 9 < body["uptime"] < 600


async def test_health_is_200_when_not_ready_and_lists_no_degraded_when_all_online(client, service):
    service.ready = False
    service.get("vx42").status = "ONLINE"
    resp = await client.get("/v1/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["ready"] is False
    assert body["degraded"] == []


async def test_health_empty_daemon():
    async with TestClient(TestServer(make_app(FakeService()))) as c:
        body = await (await c.get("/v1/health")).json()
    assert body["ready"] is True and body["overlays"] == 0 and body["degraded"] == []


# -- list / show ------------------------------------------------------------------------
async def test_list_and_show_are_describe(client, service):
    resp = await client.get("/v1/overlays")
    assert resp.status == 200
    assert await resp.json() == [o.describe() for o in service.overlays()]
    assert await (await client.get("/v1/overlays/vx42")).json() == service.get("vx42").describe()
    resp = await client.get("/v1/overlays/vx23")
    assert resp.status == 200
    body = await resp.json()
    assert body == service.get("vx23").describe()
    assert body["status"] == "ONLINE" and body["plugin"] == "files" and body["vni"] == 23


# -- create -----------------------------------------------------------------------------
async def test_create_is_201_with_description_and_defaults_and_is_listed(client, service):
    resp = await client.post("/v1/overlays", json=NEW)
    assert resp.status == 201
    body = await resp.json()
    assert body == service.get("vx7").describe()
    assert body["name"] == "vx7" and body["vni"] == 7 and body["mode"] == "push"
    cfg = service.created[-1]
    assert cfg.name == "vx7" and cfg.persist is True and cfg.mode == "auto" and cfg.encap == "vxlan"
    assert dict(cfg.properties) == NEW["properties"]
    names = [o["name"] for o in await (await client.get("/v1/overlays")).json()]
    assert names == ["vx23", "vx42", "vx7"]


async def test_create_passes_explicit_mode_bridge_and_persist(client, service):
    resp = await client.post("/v1/overlays", json={**NEW, "mode": "on-demand", "bridge": "br7", "persist": False})
    assert resp.status == 201
    assert (await resp.json())["name"] == "vx7"
    cfg = service.created[-1]
    assert (cfg.vni, cfg.mode, cfg.bridge, cfg.persist) == (7, "on-demand", "br7", False)


@pytest.mark.parametrize("change, field", [
    ({"vni": 1 << 24}, "vni"),
    ({"vni": -1}, "vni"),
    ({"vni": "x"}, "vni"),
    ({"name": "x" * 16}, "name"),
    ({"name": "a/b"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "vx 1"}, "name"),
    ({"mode": "lazy"}, "mode"),
    ({"encap": "geneve"}, "encap"),
    ({"bridge": "br/0"}, "bridge"),
    ({"colour": "red"}, "colour"),
])
async def test_create_validation_error_names_the_field(client, service, change, field):
    msg = await error_of(await client.post("/v1/overlays", json={**NEW, **change}), 400)
    assert msg.startswith(f"{field}: "), msg
    assert service.created == []


@pytest.mark.parametrize("missing", ["name", "vni", "search"])
async def test_create_missing_field_names_it(client, service, missing):
    body = {k: v for k, v in NEW.items() if k != missing}
    assert await error_of(await client.post("/v1/overlays", json=body), 400) == f"{missing}: Field required"
    assert service.created == []


@pytest.mark.parametrize("data, words", [(b"", "empty"), (b"  \n", "empty"), (b"{vni: 1}", "not valid JSON"),
                                         (b"[1]", "not an array"), (b"null", "not null"),
                                         (json.dumps("vx7").encode(), "not a string"),
                                         (b"42", "not a number"),
                                         (b"\xff\xfe", "not UTF-8 JSON"),
                                         (b"[" * 5000, "not valid JSON: nested too deeply")])
async def test_create_bad_body(client, service, data, words):
    assert words in await error_of(await client.post("/v1/overlays", data=data, headers=JSON), 400)
    assert service.created == []


async def test_create_body_too_large_is_413_json_and_the_server_keeps_serving(client, service):
    resp = await client.post("/v1/overlays", json={**NEW, "properties": {"files/config": "x" * MAX_BODY}})
    assert await error_of(resp, 413) == f"request body too large: at most {MAX_BODY} bytes"
    assert service.created == []
    assert (await client.get("/v1/health")).status == 200


async def test_create_body_of_exactly_the_limit_is_accepted(client, service):
    raw = json.dumps({**NEW, "properties": {**NEW["properties"], "pad": ""}})
    pad = MAX_BODY - len(raw.encode())
    body = {**NEW, "properties": {**NEW["properties"], "pad": "x" * pad}}
    data = json.dumps(body).encode()
    assert len(data) == MAX_BODY
    resp = await client.post("/v1/overlays", data=data, headers=JSON)
    assert resp.status == 201
    assert service.created[-1].properties["pad"] == "x" * pad


@pytest.mark.parametrize("change, status, message", [
    ({"search": "nope"}, 400, "unknown plugin 'nope' (installed: direct, files)"),
    ({"properties": {**NEW["properties"], "files/nope": "1"}}, 400, "property files/nope: unknown property"),
    ({"search": "badfile"}, 400, "/etc/varpd/hosts.json: line 3: 'ip' is required"),
    ({"search": "down"}, 500, "etcd at 192.0.2.9:2379 unreachable"),
    ({"search": "kmod"}, 500, "RuntimeError: netlink: RTM_NEWLINK failed: File exists"),
])
async def test_create_daemon_errors(client, service, change, status, message):
    assert await error_of(await client.post("/v1/overlays", json={**NEW, **change}), status) == message
    assert "vx7" not in [o.name for o in service.overlays()]


async def test_create_existing_is_409(client):
    msg = await error_of(await client.post("/v1/overlays", json={**NEW, "name": "vx23"}), 409)
    assert msg == "overlay 'vx23' already exists"


async def test_create_duplicate_vni_is_409(client):
    msg = await error_of(await client.post("/v1/overlays", json={**NEW, "vni": 42}), 409)
    assert "VNI 42" in msg


# -- delete / entries / reconcile -------------------------------------------------------
async def test_delete_is_204_then_404(client, service):
    resp = await client.delete("/v1/overlays/vx23")
    assert resp.status == 204 and await resp.read() == b""
    assert service.deleted == ["vx23"]
    assert await error_of(await client.delete("/v1/overlays/vx23"), 404) == "overlay 'vx23' not found"
    assert (await client.get("/v1/overlays/vx23")).status == 404
    assert [o["name"] for o in await (await client.get("/v1/overlays")).json()] == ["vx42"]


async def test_delete_that_keeps_a_bridge_says_so_and_force_bridge_is_passed(client, service):
    kept = {"device": "br0", "reason": "ports vnic0 are still attached"}
    service.kept_on_delete = [kept]
    resp = await client.delete("/v1/overlays/vx23")
    assert resp.status == 200 and await resp.json() == {"name": "vx23", "kept": [kept]}
    assert service.force_bridge == [False]
    assert (await client.delete("/v1/overlays/vx42?force_bridge=true")).status == 200
    assert service.force_bridge == [False, True]
    assert await error_of(await client.delete("/v1/overlays/vx42?force_bridge=yes"), 400) == \
        "force_bridge: expected true or false, not 'yes'"


async def test_entries(client, service):
    resp = await client.get("/v1/overlays/vx23/entries")
    assert resp.status == 200
    body = await resp.json()
    assert body == service.get("vx23").entries
    assert {"kind": "fdb", "target": "02:08:20:00:00:02", "destination": "[2001:db8::2]:4789",
            "origin": "push"} in body


async def test_entries_empty(client):
    resp = await client.get("/v1/overlays/vx42/entries")
    assert resp.status == 200
    assert await resp.json() == []


async def test_reconcile(client, service):
    resp = await client.post("/v1/overlays/vx23/reconcile")
    assert resp.status == 200
    assert await resp.json() == {"fdb_added": 1, "fdb_removed": 0, "neigh_added": 2, "neigh_removed": 0}
    assert service.reconciled == ["vx23"]


@pytest.mark.parametrize("method, path", [("GET", "/v1/overlays/x"), ("DELETE", "/v1/overlays/x"),
                                          ("GET", "/v1/overlays/x/entries"), ("POST", "/v1/overlays/x/reconcile")])
async def test_unknown_overlay_is_404(client, method, path):
    assert await error_of(await client.request(method, path), 404) == "overlay 'x' not found"


async def test_unknown_route_and_wrong_method_are_json_errors(client):
    assert await error_of(await client.get("/v2/nothing"), 404) == "not found: GET /v2/nothing"
    resp = await client.put("/v1/overlays/vx23")
    assert await error_of(resp, 405) == "method not allowed: PUT /v1/overlays/vx23"
    assert "GET" in resp.headers["Allow"]


async def test_name_with_reserved_characters_is_one_path_segment(client):
    assert await error_of(await client.get("/v1/overlays/a%2Fb"), 404) == "overlay 'a/b' not found"


# -- the unexpected ---------------------------------------------------------------------
@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/overlays"), ("GET", "/v1/overlays/vx23"), ("DELETE", "/v1/overlays/vx23"),
    ("POST", "/v1/overlays/vx23/reconcile"), ("GET", "/v1/health"),
])
async def test_unexpected_exception_is_500_and_server_keeps_serving(client, service, method, path):
    service.fail_next = RuntimeError("netlink said no")
    resp = await client.request(method, path)
    assert resp.status == 500
    assert await resp.json() == {"error": "RuntimeError: netlink said no"}
    # the next request is answered normally
    resp = await client.get("/v1/overlays/vx23")
    assert resp.status == 200
    assert (await resp.json())["name"] == "vx23"


async def test_unexpected_exception_in_create_is_500(client, service):
    service.fail_next = OSError(105, "No buffer space available")
    msg = await error_of(await client.post("/v1/overlays", json=NEW), 500)
    assert msg.startswith("OSError: ")
    assert (await client.post("/v1/overlays", json=NEW)).status == 201
