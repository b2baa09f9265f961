"""The mapping API over aiohttp (documented in docs/mapping-api.yaml).

    GET    /v1/health                              liveness (no token needed)
    GET    /v1/overlays/{vni}/macs/{mac}           the record of a VNIC MAC, or 404
    PUT    /v1/overlays/{vni}/macs/{mac}           add or replace it (201 created, 200 replaced)
    DELETE /v1/overlays/{vni}/macs/{mac}           remove it (204, or 404)
    GET    /v1/overlays/{vni}/ips/{ip}             the record owning overlay IPv4/IPv6 `ip`, or 404
    GET    /v1/overlays/{vni}/events               server-sent events: hello, upsert, remove, resync

With a token, every /v1/overlays route wants `Authorization: Bearer <token>` (401 otherwise).
Errors are JSON: {"error": "<one line>"}.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
from typing import Any

from aiohttp import web

from varpd import json_input
from varpd.mapping_server.store import Conflict, Event, MappingStore, ReadOnly
from varpd.mapping_server.wire import WireError, parse_mac, record_from_json, record_to_json

log = logging.getLogger(__name__)

STORE = web.AppKey("store", MappingStore)
TOKEN = web.AppKey("token", str)
KEEPALIVE = web.AppKey("keepalive", float)
MAX_BODY = 64 * 1024


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _store(request: web.Request) -> MappingStore:
    store = request.app[STORE]
    text = request.match_info["vni"]
    if not text.isdigit() or int(text) != store.vni:
        raise web.HTTPNotFound(text=json.dumps({"error": f"unknown overlay {text!r} (this server serves vni "
                                                         f"{store.vni})"}), content_type="application/json")
    return store


def _mac(request: web.Request) -> str:
    try:
        return parse_mac(request.match_info["mac"])
    except WireError as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": str(exc)}), content_type="application/json") from None


@web.middleware
async def _auth(request: web.Request, handler):
    token = request.app.get(TOKEN)
    if token and request.path.startswith("/v1/overlays"):
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": 'Bearer realm="varpd"'})
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return web.json_response({"ok": True, "vni": store.vni, "records": len(store), "position": store.position})


async def get_mac(request: web.Request) -> web.Response:
    store, mac = _store(request), _mac(request)
    rec = store.get(mac)
    if rec is None:
        return _error(404, f"unknown MAC {mac}")
    return web.json_response(record_to_json(rec))


async def put_mac(request: web.Request) -> web.Response:
    store, mac = _store(request), _mac(request)
    try:
        body = await request.json(loads=json_input.loads)
    except ValueError as exc:
        return _error(400, f"invalid JSON: {exc}")
    try:
        rec = record_from_json(body, mac)
        created = store.put(rec)
    except WireError as exc:
        return _error(400, str(exc))
    except Conflict as exc:
        return _error(409, f"{mac}: {exc}")
    except ReadOnly as exc:
        return _error(403, str(exc))
    return web.json_response(record_to_json(rec), status=201 if created else 200)


async def delete_mac(request: web.Request) -> web.Response:
    store, mac = _store(request), _mac(request)
    try:
        old = store.delete(mac)
    except ReadOnly as exc:
        return _error(403, str(exc))
    if old is None:
        return _error(404, f"unknown MAC {mac}")
    return web.Response(status=204)


async def get_ip(request: web.Request) -> web.Response:
    store = _store(request)
    text = request.match_info["ip"]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return _error(400, f"{text!r} is not an IPv4 or IPv6 address")
    rec = store.by_ip(ip)
    if rec is None:
        return _error(404, f"unknown IP {ip}")
    return web.json_response(record_to_json(rec))


def _sse(kind: str, data: Any, event_id: str | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {kind}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def _sse_event(store: MappingStore, ev: Event) -> bytes:
    return _sse(ev.kind, record_to_json(ev.record), f"{store.epoch}:{ev.seq}")


async def events(request: web.Request) -> web.StreamResponse:
    store = _store(request)
    sub = store.subscribe(request.headers.get("Last-Event-ID"))
    keepalive = request.app.get(KEEPALIVE, 15.0)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    try:
        await resp.prepare(request)
        hello = {"vni": store.vni, "epoch": store.epoch}
        # replaying: the ids come with the replayed events; otherwise resume from here
        await resp.write(_sse("hello", hello, None if sub.replay else sub.position))
        if sub.resync:
            await resp.write(_sse("resync", hello, sub.position))
        for ev in sub.replay:
            await resp.write(_sse_event(store, ev))
        while True:
            try:
                item = await asyncio.wait_for(sub.queue.get(), keepalive)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            if store.is_closed(item):
                break
            await resp.write(_sse_event(store, item))
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        store.unsubscribe(sub)
    return resp


ROUTES = (
    ("GET", "/v1/health", health),
    ("GET", "/v1/overlays/{vni}/macs/{mac}", get_mac),
    ("PUT", "/v1/overlays/{vni}/macs/{mac}", put_mac),
    ("DELETE", "/v1/overlays/{vni}/macs/{mac}", delete_mac),
    ("GET", "/v1/overlays/{vni}/ips/{ip}", get_ip),
    ("GET", "/v1/overlays/{vni}/events", events),
)


def make_app(store: MappingStore, *, token: str | None = None, keepalive: float = 15.0,
             manage_store: bool = True) -> web.Application:
    """The application; with `manage_store` the store is started and stopped with it."""
    app = web.Application(middlewares=[_auth], client_max_size=MAX_BODY)
    app[STORE] = store
    app[KEEPALIVE] = keepalive
    if token:
        app[TOKEN] = token
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)

    async def _on_startup(app: web.Application) -> None:
        if manage_store:
            await store.start()

    async def _on_shutdown(app: web.Application) -> None:
        store.close_streams()  # open event streams would hold the shutdown

    async def _on_cleanup(app: web.Application) -> None:
        if manage_store:
            await store.stop()

    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app
