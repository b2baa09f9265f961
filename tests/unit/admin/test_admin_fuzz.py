"""Property-based fuzz of the admin API's JSON bodies (POST /v1/overlays, PATCH /v1/overlays/NAME,
PUT .../cache/MAC): whatever the body, the answer is a success or a one-line JSON 4xx, never a
500, never a logged traceback, and one request never takes more than a few MB (issue #12).

One event loop and one TestClient serve every example (hypothesis drives a plain function)."""
from __future__ import annotations

import asyncio
import json
import logging
import tracemalloc
from urllib.parse import quote

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings, strategies as st

from fake_service import seeded
from varpd.admin.app import MAX_BODY, make_app

PER_REQUEST_PEAK = 16 * 1024 * 1024  # bytes traced while one request is answered
ANSWERS = {200, 201, 400, 404, 409, 413, 415}

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=24))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
names = st.sampled_from(["vx7", "vx23", "all", "default", "a/b", "", "x" * 16, "vx%d", ".."]) | values
properties = st.dictionaries(st.sampled_from(["vxlan/listen_ip", "files/config", "files/nope", "link/mtu",
                                              "direct/dest_ip", "x"]), scalars | values, max_size=4) | values
overlay = st.fixed_dictionaries({}, optional={
    "name": names, "vni": st.integers() | values, "encap": st.sampled_from(["vxlan", "geneve"]) | values,
    # (not `down` or `kmod`: the fake daemon's own 500s)
    "search": st.sampled_from(["files", "direct", "nope", "badfile"]) | values,
    "mode": st.sampled_from(["auto", "push", "on-demand", "lazy"]) | values,
    "bridge": names, "properties": properties, "persist": values, "extra": values})


def _encoded(body) -> bytes:
    return json.dumps(body).encode()


hostile = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda n, opener: opener * n, st.integers(1, 20000), st.sampled_from([b"[", b'{"a":', b'{"a":['])),
    st.builds(lambda n: b'{"vni": ' + b"9" * n + b"}", st.integers(1, 6000)),
    st.sampled_from([b'{"vni": 1e999}', b'{"vni": NaN}', b'{"x": -Infinity}', b"\xff\xfe{}", b"", b" ",
                     b'{"a": 1, "a": 2}', b"{" + b" " * (MAX_BODY + 1) + b"}"]),
)
bodies = st.one_of(overlay.map(_encoded), values.map(_encoded), hostile)
patches = st.one_of(st.fixed_dictionaries({"properties": properties}).map(_encoded),
                    st.fixed_dictionaries({}, optional={"properties": properties, "x": values}).map(_encoded),
                    hostile)
entries = st.one_of(st.fixed_dictionaries({"destination": st.sampled_from(
                        ["drop", "192.0.2.2:4789", "[2001:db8::2]:4789", "[::1]:", "0.0.0.0:1", "192.0.2.2:²",
                         "[fe80::1%eth0]:4789", "192.0.2.2:" + "9" * 5000]) | values}).map(_encoded),
                    st.fixed_dictionaries({}, optional={"destination": values}).map(_encoded), hostile)
macs = st.sampled_from(["02:00:00:00:00:01", "02-00-00-00-00-01", "zz:00:00:00:00:01", "0" * 5000]) | st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
requests = st.one_of(
    st.tuples(st.just("POST"), st.just("/v1/overlays"), bodies),
    st.tuples(st.just("PATCH"), st.sampled_from(["/v1/overlays/vx23", "/v1/overlays/nope"]), patches),
    st.tuples(st.just("PUT"), macs.map(lambda m: f"/v1/overlays/vx23/cache/{quote(m, safe='')}"), entries),
)


class _Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)


async def _check(client: TestClient, method: str, path: str, body: bytes) -> None:
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    resp = await client.request(method, path, data=body, headers={"Content-Type": "application/json"})
    text = await resp.text()
    _, peak = tracemalloc.get_traced_memory()
    assert resp.status in ANSWERS, (resp.status, text[:300])
    answer = json.loads(text)
    if resp.status >= 400:
        assert list(answer) == ["error"], answer
        assert answer["error"] and "\n" not in answer["error"] and "Traceback" not in answer["error"]
    assert peak - before < PER_REQUEST_PEAK, f"{method} {path}: {peak - before} bytes"


def test_no_json_body_gives_a_500_a_traceback_or_unbounded_memory():
    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(make_app(seeded())), loop=loop)
    loop.run_until_complete(client.start_server())
    errors = _Tracebacks()
    root = logging.getLogger()
    root.addHandler(errors)
    tracemalloc.start()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.data_too_large])
    @given(requests)
    def one_request(request):
        loop.run_until_complete(_check(client, *request))
        assert not errors.records, [r.getMessage() for r in errors.records]

    try:
        one_request()
    finally:
        tracemalloc.stop()
        root.removeHandler(errors)
        loop.run_until_complete(client.close())
        loop.close()
