"""GET /v1/health: is the daemon up, and has it finished starting its overlays?"""

from __future__ import annotations

import time

from aiohttp import web

from varpd.admin.app import SERVICE

routes = web.RouteTableDef()


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    """Always 200 while the daemon answers: `ready` says whether it has started its overlays."""
    service = request.app[SERVICE]
    overlays = service.overlays()  # status only: describing 1000 overlays per probe cost 40 ms
    return web.json_response({
        "ready": bool(service.ready),
        "overlays": len(overlays),
        "degraded": sorted(o.name for o in overlays if o.status != "ONLINE"),
        "uptime": round(time.time() - service.started_at, 3),
    })
