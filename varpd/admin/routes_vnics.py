"""/v1/vnics: list, create, show, delete VNICs (dladm create-vnic -l OVERLAY)."""

from __future__ import annotations

from aiohttp import web

from varpd.admin.app import SERVICE, read_json_object
from varpd.config.vnic import VnicConfig

routes = web.RouteTableDef()


@routes.get("/v1/vnics")
async def list_vnics(request: web.Request) -> web.Response:
    return web.json_response(await request.app[SERVICE].vnics.list())


@routes.post("/v1/vnics")
async def create_vnic(request: web.Request) -> web.Response:
    """Body: a VnicConfig as JSON; 201 with the new VNIC's description."""
    cfg = VnicConfig.model_validate(await read_json_object(request))
    return web.json_response(await request.app[SERVICE].vnics.create(cfg), status=201)


@routes.get("/v1/vnics/{name}")
async def show_vnic(request: web.Request) -> web.Response:
    return web.json_response(await request.app[SERVICE].vnics.describe(request.match_info["name"]))


@routes.delete("/v1/vnics/{name}")
async def delete_vnic(request: web.Request) -> web.Response:
    await request.app[SERVICE].vnics.delete(request.match_info["name"])
    return web.Response(status=204)
