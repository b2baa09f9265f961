"""Every admin route on a fake service: status codes, bodies, one-line errors."""
from __future__ import annotations

import pytest

from varpd.admin.app import MAX_BODY

NEW = {"name": "vx7", "vni": 7, "search": "files", "properties": {"vxlan/listen_ip": "192.0.2.1"}}


async def error_of(resp, status: int) -> str:
    assert resp.status == status
    body = await resp.json()
    assert list(body) == ["error"] and "\n" not in body["error"]
    return body["error"]


async def test_health_reports_readiness_count_and_uptime(client, service):
    body = await (await client.get("/v1/health")).json()
    assert body["ready"] is True and body["overlays"] == 2 and body["degraded"] == ["vx42"]
    assert 9 < body["uptime"] < 600


async def test_health_is_200_when_not_ready(client, service):
    service.ready = False
    resp = await client.get("/v1/health")
    assert resp.status == 200 and (await resp.json())["ready"] is False


async def test_list_and_show_are_describe(client, service):
    assert await (await client.get("/v1/overlays")).json() == [o.describe() for o in service.overlays()]
    assert await (await client.get("/v1/overlays/vx42")).json() == service.get("vx42").describe()


async def test_create_is_201_with_description_and_passes_the_config(client, service):
    resp = await client.post("/v1/overlays", json={**NEW, "mode": "on-demand", "bridge": "br7", "persist": False})
    assert resp.status == 201
    assert (await resp.json())["name"] == "vx7"
    cfg = service.created[-1]
    assert (cfg.vni, cfg.mode, cfg.bridge, cfg.persist) == (7, "on-demand", "br7", False)


@pytest.mark.parametrize("change, field", [({"vni": 1 << 24}, "vni"), ({"vni": "x"}, "vni"),
                                           ({"name": "x" * 16}, "name"), ({"mode": "lazy"}, "mode"),
                                           ({"encap": "geneve"}, "encap"), ({"colour": "red"}, "colour")])
async def test_create_validation_error_names_the_field(client, service, change, field):
    msg = await error_of(await client.post("/v1/overlays", json={**NEW, **change}), 400)
    assert msg.startswith(f"{field}: ")
    assert service.created == []


async def test_create_missing_field_names_it(client):
    body = {k: v for k, v in NEW.items() if k != "vni"}
    assert await error_of(await client.post("/v1/overlays", json=body), 400) == "vni: Field required"


@pytest.mark.parametrize("data, words", [(b"", "empty"), (b"  \n", "empty"), (b"{vni: 1}", "not valid JSON"),
                                         (b"[1]", "not an array"), (b"null", "not null"),
                                         (b"\xff\xfe", "not UTF-8 JSON")])
async def test_create_bad_body(client, service, data, words):
    assert words in await error_of(await client.post("/v1/overlays", data=data), 400)
    assert service.created == []


async def test_create_body_too_large_is_413_json(client, service):
    resp = await client.post("/v1/overlays", json={**NEW, "properties": {"files/config": "x" * MAX_BODY}})
    assert await error_of(resp, 413) == f"request body too large: at most {MAX_BODY} bytes"
    assert service.created == []


@pytest.mark.parametrize("search, status, message", [
    ("nope", 400, "no backend 'nope' is installed"),
    ("badprop", 400, "property badprop/x: unknown property"),
    ("badfile", 400, "/etc/varpd/hosts.json: line 3: 'ip' is required"),
    ("down", 500, "etcd at 192.0.2.9:2379 unreachable"),
    ("kmod", 500, "RuntimeError: netlink: RTM_NEWLINK failed: File exists"),
])
async def test_create_daemon_errors(client, search, status, message):
    assert await error_of(await client.post("/v1/overlays", json={**NEW, "search": search}), status) == message


async def test_create_existing_is_409(client):
    msg = await error_of(await client.post("/v1/overlays", json={**NEW, "name": "vx23"}), 409)
    assert msg == "overlay 'vx23' already exists"


async def test_delete_is_204_then_404(client, service):
    resp = await client.delete("/v1/overlays/vx23")
    assert resp.status == 204 and await resp.read() == b""
    assert await error_of(await client.delete("/v1/overlays/vx23"), 404) == "overlay 'vx23' not found"


async def test_entries(client, service):
    resp = await client.get("/v1/overlays/vx23/entries")
    assert resp.status == 200 and await resp.json() == service.get("vx23").entries


async def test_reconcile(client):
    resp = await client.post("/v1/overlays/vx23/reconcile")
    assert resp.status == 200 and await resp.json() == {"added": 2, "removed": 1}


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
