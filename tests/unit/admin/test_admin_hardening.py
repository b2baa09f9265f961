"""Issue #12, item 16: hostile bodies are a one-line 4xx (never a 500 or a traceback), names the
kernel reserves are refused, and the TCP listener refuses what a browser sends for another site."""
from __future__ import annotations

import json
import logging

import pytest

from test_admin_routes import JSON, NEW, error_of
from varpd.admin.app import MAX_DEPTH, MAX_DIGITS
from varpd.config.daemon import ConfigError, load_config


@pytest.mark.parametrize("data, words", [
    (b"[" * 30000 + b"]" * 30000, "nested too deeply"),  # (too deep for the parser: varpd.json_input)
    (b'{"a":' * 10000 + b"1" + b"}" * 10000, "nested too deeply"),
    (b'{"a":' * 100 + b"1" + b"}" * 100, f"nested deeper than {MAX_DEPTH} levels"),
    (b'{"name": "vx7", "vni": ' + b"9" * 5000 + b', "search": "files"}', f"at most {MAX_DIGITS}"),
    (b'{"name": "vx7", "vni": -' + b"9" * 5000 + b', "search": "files"}', f"at most {MAX_DIGITS}"),
    (b'{"name": "vx7", "vni": 1e999, "search": "files"}', "out of range"),
    (b'{"name": "vx7", "vni": 7, "search": "files", "properties": {"x": NaN}}', "NaN is not a JSON value"),
    (b'{"name": "vx7", "vni": 7, "search": "files", "properties": {"x": -Infinity}}', "not a JSON value"),
])
async def test_hostile_json_is_a_one_line_400(client, service, caplog, data, words):
    with caplog.at_level(logging.DEBUG):
        msg = await error_of(await client.post("/v1/overlays", data=data, headers=JSON), 400)
    assert words in msg and len(msg) < 200, msg
    assert service.created == []
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]


async def test_nesting_up_to_the_limit_reaches_validation(client, service):
    deep = {"name": "vx7", "vni": 7, "search": "files", "properties": {"x": {}}}
    inner = deep["properties"]
    for _ in range(MAX_DEPTH - 3):
        inner["x"] = {}
        inner = inner["x"]
    msg = await error_of(await client.post("/v1/overlays", json=deep), 400)
    assert msg.startswith("properties.x"), msg  # pydantic's refusal: not a depth error


@pytest.mark.parametrize("field", ["name", "bridge"])
@pytest.mark.parametrize("name", ["all", "default"])
async def test_names_the_kernel_reserves_are_400(client, service, field, name):
    msg = await error_of(await client.post("/v1/overlays", json={**NEW, field: name}), 400)
    assert msg.startswith(f"{field}: ") and "reserved by the kernel" in msg, msg
    assert service.created == []


def test_the_config_file_refuses_them_too(tmp_path):
    cfg = tmp_path / "varpd.toml"
    cfg.write_text('[[overlays]]\nname = "default"\nvni = 7\nsearch = "files"\n')
    with pytest.raises(ConfigError, match=r"varpd.toml: overlays.0.name: .*'default' is reserved by the kernel"):
        load_config(cfg)
    cfg.write_text('[[overlays]]\nname = "vx7"\nvni = 0\nsearch = "files"\n')
    with pytest.raises(ConfigError, match=r"overlays.0.vni: .*0 is not a VNI: a VNI is 1-16777215"):
        load_config(cfg)


@pytest.mark.parametrize("vni", [0, 1 << 24, 99999999999])
async def test_the_api_refuses_vnis_as_the_config_does(client, service, vni):
    msg = await error_of(await client.post("/v1/overlays", json={**NEW, "vni": vni}), 400)
    assert msg.startswith("vni: ") and f"{vni} is not a VNI: a VNI is 1-16777215" in msg, msg


@pytest.mark.parametrize("value, kind", [([1], "an array"), ({"a": 1}, "an object"), (None, "null")])
async def test_patch_property_values_must_be_scalars(client, service, value, kind):
    resp = await client.patch("/v1/overlays/vx23", json={"properties": {"files/config": value}})
    msg = await error_of(resp, 400)
    assert msg.startswith("properties.files/config: ") and kind in msg, msg


# -- cross-site requests ------------------------------------------------------------------
async def test_a_text_plain_post_is_415_and_creates_nothing(client, service):
    resp = await client.post("/v1/overlays", data=json.dumps(NEW), headers={"Content-Type": "text/plain"})
    assert "application/json" in await error_of(resp, 415)
    resp = await client.put("/v1/overlays/vx23/cache/02:00:00:00:00:01", data='{"destination": "drop"}')
    assert "application/json" in await error_of(resp, 415)
    assert service.created == []


@pytest.mark.parametrize("headers, words", [
    ({"Host": "evil.example:8179"}, "Host 'evil.example:8179' refused"),
    ({"Host": "rebind.example"}, "Host 'rebind.example' refused"),
    ({"Origin": "http://evil.example"}, "Origin 'http://evil.example' refused"),
    ({"Origin": "null"}, "Origin 'null' refused"),
])
async def test_foreign_host_or_origin_on_tcp_is_403(client, service, headers, words):
    resp = await client.post("/v1/overlays", json=NEW, headers=headers)
    assert words in await error_of(resp, 403)
    assert (await client.get("/v1/health", headers=headers)).status == 403
    assert service.created == []


@pytest.mark.parametrize("host", ["127.0.0.1:8179", "localhost:8179", "[::1]:8179", "127.0.0.1", "LOCALHOST"])
async def test_ip_or_localhost_hosts_and_a_same_origin_are_served(client, service, host):
    resp = await client.get("/v1/health", headers={"Host": host, "Origin": f"http://{host}"})
    assert resp.status == 200, await resp.text()


async def test_the_unix_socket_does_not_check_host_or_origin(daemon_socket):
    status, _ = await daemon_socket("GET", "/v1/health", headers={"Host": "evil.example", "Origin": "http://x"})
    assert status == 200
    status, body = await daemon_socket("POST", "/v1/overlays", data=json.dumps(NEW),
                                       headers={"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in body["error"]
