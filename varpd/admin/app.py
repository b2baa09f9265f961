"""The admin HTTP application: JSON over the daemon's unix socket (TCP only when configured)."""

from __future__ import annotations

import json
import logging

from aiohttp import web
from pydantic import ValidationError

from varpd.backend.errors import BackendError
from varpd.daemon.errors import OverlayExists, OverlayNotFound

log = logging.getLogger(__name__)

SERVICE: web.AppKey = web.AppKey("service", object)
MAX_BODY = 64 * 1024


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _one_line(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


@web.middleware
async def errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Map the daemon's exceptions to status codes with a one-line message."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except OverlayNotFound as exc:
        return error(404, str(exc))
    except OverlayExists as exc:
        return error(409, str(exc))
    except ValidationError as exc:
        return error(400, _one_line(exc))
    except json.JSONDecodeError as exc:
        return error(400, f"request body is not valid JSON: {exc.msg} at line {exc.lineno}")
    except BackendError as exc:
        return error(400, str(exc))
    except Exception as exc:  # kmod errors and the unexpected: the daemon keeps serving
        log.exception("admin request %s %s failed", request.method, request.path)
        return error(500, " ".join(f"{type(exc).__name__}: {exc}".split()))


def make_app(service) -> web.Application:
    from varpd.admin import routes_health, routes_overlays

    app = web.Application(client_max_size=MAX_BODY, middlewares=[errors_middleware])
    app[SERVICE] = service
    app.add_routes(routes_health.routes)
    app.add_routes(routes_overlays.routes)
    return app
