"""/v1/overlays: list, create, show, delete, kernel entries, reconcile."""

from __future__ import annotations

from aiohttp import web

from varpd.admin.app import SERVICE, BadRequest, json_type, read_json_object
from varpd.config.daemon import OverlayConfig
from varpd.daemon import backend_views

routes = web.RouteTableDef()


@routes.get("/v1/overlays")
async def list_overlays(request: web.Request) -> web.Response:
    return web.json_response([backend_views.describe(o) for o in request.app[SERVICE].overlays()])


@routes.post("/v1/overlays")
async def create_overlay(request: web.Request) -> web.Response:
    """Body: an OverlayConfig as JSON; 201 with the new overlay's description."""
    cfg = OverlayConfig.model_validate(await read_json_object(request))
    rt = await request.app[SERVICE].create_overlay(cfg)
    return web.json_response(rt.describe(), status=201)


@routes.get("/v1/overlays/{name}")
async def show_overlay(request: web.Request) -> web.Response:
    return web.json_response(backend_views.describe(request.app[SERVICE].get(request.match_info["name"])))


@routes.delete("/v1/overlays/{name}")
async def delete_overlay(request: web.Request) -> web.Response:
    """?force_bridge=true: also remove a bridge varpd made that still has ports (they are detached).
    204 when everything varpd made is gone; 200 {"name", "kept": [{"device", "reason"}]} otherwise."""
    force = request.query.get("force_bridge", "false")
    if force not in ("true", "false"):
        raise BadRequest(f"force_bridge: expected true or false, not {force!r}")
    kept = await request.app[SERVICE].delete_overlay(request.match_info["name"], force_bridge=force == "true")
    if kept:
        return web.json_response({"name": request.match_info["name"], "kept": kept})
    return web.Response(status=204)


@routes.get("/v1/overlays/{name}/entries")
async def overlay_entries(request: web.Request) -> web.Response:
    """The overlay's FDB and neighbour entries as the kernel has them now."""
    rt = request.app[SERVICE].get(request.match_info["name"])
    return web.json_response(await backend_views.entries(rt))


@routes.post("/v1/overlays/{name}/reconcile")
async def reconcile_overlay(request: web.Request) -> web.Response:
    """Reconcile now; the answer is the reconciler's report (entries added and removed)."""
    return web.json_response(await request.app[SERVICE].reconcile(request.match_info["name"]))


@routes.put("/v1/overlays/{name}/cache/{mac}")
async def set_cache_entry(request: web.Request) -> web.Response:
    """Body {"destination": "ip:port" | "drop"}: a hand-set entry (dladm modify-overlay -s)."""
    body = await read_json_object(request)
    dest = body.get("destination")
    if not isinstance(dest, str):
        raise BadRequest('body must be {"destination": "ip:port" or "drop"}')
    answer = await request.app[SERVICE].set_entry(request.match_info["name"], request.match_info["mac"], dest)
    return web.json_response(answer)


@routes.delete("/v1/overlays/{name}/cache/{mac}")
async def delete_cache_entry(request: web.Request) -> web.Response:
    """Forget one MAC's entry, hand-set or resolved (dladm modify-overlay -d)."""
    await request.app[SERVICE].delete_entry(request.match_info["name"], request.match_info["mac"])
    return web.Response(status=204)


@routes.delete("/v1/overlays/{name}/cache")
async def flush_cache(request: web.Request) -> web.Response:
    """Forget every hand-set and resolved entry (dladm modify-overlay -f)."""
    await request.app[SERVICE].flush(request.match_info["name"])
    return web.Response(status=204)


@routes.patch("/v1/overlays/{name}")
async def set_overlay_properties(request: web.Request) -> web.Response:
    """Body {"properties": {name: value}}: change writable properties of a live overlay."""
    body = await read_json_object(request)
    props = body.get("properties")
    if not isinstance(props, dict) or not props or set(body) != {"properties"}:
        raise BadRequest('body must be {"properties": {"<module>/<name>": value, ...}}')
    for prop, value in props.items():
        if not isinstance(value, (str, int, float, bool)):
            raise BadRequest(f"properties.{prop}: a property value is a string, a number or a boolean, "
                             f"not {json_type(value)}")
    rt = await request.app[SERVICE].set_properties(request.match_info["name"], props)
    return web.json_response(rt.describe())
