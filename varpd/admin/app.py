"""The admin HTTP application: JSON over the daemon's unix socket (TCP only when configured).

Every answer is JSON; every error is ``{"error": "<one line>"}`` with a status that says whose
fault it was: 400 the request (invalid overlay, unknown plugin or property, bad backend data,
a body that is not a small JSON object), 403 a TCP client outside `daemon.admin_allow` or a
request a browser sent for another site (a Host that is not an IP address or localhost, an
Origin other than the Host), 404 no such overlay, 408 a body not sent in time, 409 already
exists, 415 a body that is not `application/json`, 500 the daemon or the host (backend
unreachable, netlink refused, a bug).  The daemon keeps serving whatever a request raised.

Why 403 and 415: a web page can make a browser POST `text/plain` to a loopback port without
asking first (a CORS "simple request").  Requiring `application/json` makes the browser ask (a
preflight this API never grants), and refusing foreign Host and Origin headers stops DNS
rebinding.  The unix socket, which no browser can reach, is not checked for Host or Origin;
the Content-Type rule holds on both, so a request means the same everywhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import socket
from typing import Any, Iterable, Protocol

from aiohttp import web
from pydantic import ValidationError

from varpd import json_input
from varpd.admin.limits import BODY_TIMEOUT, ConnectionGate
from varpd.backend.errors import BackendError, ConfigError, PluginNotFound, PropertyError
from varpd.config.daemon import ADMIN_ALLOW_DEFAULT, validation_problems
from varpd.daemon.errors import OverlayExists, OverlayNotFound, PlacementRefused, VarpdError

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_DEPTH = 32  # nesting of a body's arrays and objects (a real one is 3 deep)
MAX_DIGITS = 24  # of a number in a body: every integer the API takes fits in 64 bits


class OverlayView(Protocol):
    """What the admin app needs of one overlay (varpd.daemon.overlay.OverlayRuntime)."""

    name: str

    def describe(self) -> dict[str, Any]: ...

    async def kernel_entries(self) -> list[dict[str, str]]: ...


class Service(Protocol):
    """What the admin app needs of the daemon (varpd.daemon.service.Varpd)."""

    ready: bool
    started_at: float

    def overlays(self) -> list[OverlayView]: ...

    def get(self, name: str) -> OverlayView: ...

    async def create_overlay(self, cfg: Any) -> OverlayView: ...

    async def delete_overlay(self, name: str, *, force_bridge: bool = False) -> list[dict[str, str]]: ...

    async def reconcile(self, name: str) -> dict[str, Any]: ...


SERVICE = web.AppKey("service", Service)
ADMIN_LISTENERS = web.AppKey("admin_listeners", list[ConnectionGate])  # set by the runner, for /metrics

# errors that are the request's fault; their str() is already the message for the user
_BAD_REQUEST = (PropertyError, PluginNotFound, ConfigError, PlacementRefused)
# the daemon's and the host's own errors: a known failure, told without a traceback
_KNOWN_FAILURES: tuple[type[Exception], ...] = (VarpdError, BackendError)


def _kmod_error() -> tuple[type[Exception], ...]:
    """KmodError lives in the kmod-shim, which the admin app does not need in order to import."""
    try:
        from varpd_kmod.types import KmodError
    except ImportError:
        return ()
    return (KmodError,)


def one_line(text: str) -> str:
    """Collapse a message to the single line the CLI prints after `varpd: <command>: `."""
    return " ".join(text.split()) or "(no message)"


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": one_line(message)}, status=status)


def validation_message(exc: ValidationError) -> str:
    """Pydantic's errors as one line, each naming its field: `vni: Input should be ...; name: ...`."""
    return "; ".join(validation_problems(exc, top="body"))


class BadRequest(Exception):
    """A request the routes refuse before asking the daemon; answered `status` (400)."""

    status = 400


class SlowBody(BadRequest):
    status = 408


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx that says what is wrong with it.

    The body is bounded by the app's client_max_size (aiohttp answers 413 beyond it), the time
    to send it by BODY_TIMEOUT, its nesting by MAX_DEPTH and its numbers by MAX_DIGITS, so that
    no body reaches pydantic or the daemon that a recursion or an int conversion could choke on.
    """
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            body = await request.read()
    except TimeoutError:
        raise SlowBody(f"request body not received within {BODY_TIMEOUT:g} s") from None
    if not body.strip():
        raise BadRequest("request body is empty: expected a JSON object")
    try:
        data = json_input.loads(body.decode("utf-8"), parse_int=_parse_int, parse_float=_parse_float,
                                parse_constant=_refuse_constant)  # bytes would let json guess UTF-16 or UTF-32
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, not {json_type(data)}")
    if _depth(data) > MAX_DEPTH:
        raise BadRequest(f"request body is nested deeper than {MAX_DEPTH} levels")
    return data


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise BadRequest(f"request body has a number of {len(text)} digits: at most {MAX_DIGITS}")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text) if len(text) <= 64 else math.inf
    if not math.isfinite(value):
        raise BadRequest(f"request body has a number out of range: {text[:32]}{'...' if len(text) > 32 else ''}")
    return value


def _refuse_constant(text: str) -> None:
    raise BadRequest(f"request body is not valid JSON: {text} is not a JSON value")


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in `value` (counted up to MAX_DEPTH + 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                break
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no route, wrong method, body too large) in the same JSON shape."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        message = f"request body too large: at most {MAX_BODY} bytes"
    else:
        message = f"{exc.reason.lower()}: {request.method} {request.path}"
    headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    resp = error(exc.status, message)
    resp.headers.update(headers)
    return resp


@web.middleware
async def errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Map the daemon's exceptions to a status code and a one-line message."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except BadRequest as exc:
        return error(exc.status, str(exc))
    except ValidationError as exc:
        return error(400, validation_message(exc))
    except OverlayNotFound as exc:
        return error(404, str(exc))
    except OverlayExists as exc:
        return error(409, str(exc))
    except _BAD_REQUEST as exc:
        return error(400, str(exc))
    except Exception as exc:  # noqa: BLE001 - the daemon keeps serving whatever a request raised
        if isinstance(exc, _KNOWN_FAILURES + _kmod_error()):
            log.error("admin request %s %s failed: %s", request.method, request.path, one_line(str(exc)))
            return error(500, str(exc))
        log.exception("admin request %s %s failed", request.method, request.path)
        return error(500, f"{type(exc).__name__}: {exc}")


def _host_name(host: str) -> str:
    """The name part of a Host header: `[::1]:8179` -> `::1`, `127.0.0.1:8179` -> `127.0.0.1`."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def foreign_request(headers) -> str | None:
    """Why a TCP request looks sent by a browser for another site, or None.

    A Host that is a name other than localhost is DNS rebinding (a page's own name resolved to
    this daemon); an Origin other than the Host is a page of another site.  Command-line
    clients send an IP address or localhost as Host and no Origin at all."""
    host = headers.get("Host")
    if host is not None:
        name = _host_name(host.strip()).lower()
        try:
            ipaddress.ip_address(name.partition("%")[0])
        except ValueError:
            if name not in ("localhost", "localhost."):
                return (f"Host {host!r} refused: the admin API answers only requests addressed to an IP "
                        "address or localhost")
    origin = headers.get("Origin")
    if origin is not None and (host is None or origin.partition("://")[2].rstrip("/").lower() != host.lower()):
        return f"Origin {origin!r} refused: the admin API does not answer requests of web pages of other sites"
    return None


@web.middleware
async def json_body_middleware(request: web.Request, handler) -> web.StreamResponse:
    """A request with a body must say it is JSON (415 otherwise), on every listener."""
    if request.body_exists and request.content_type != "application/json":
        given = request.headers.get("Content-Type", "none")
        return error(415, f"request body must be JSON sent as Content-Type: application/json, not {given}")
    return await handler(request)


def access_middleware(allow: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]):
    """TCP clients must come from `allow` and must not look like a browser sent them for another
    site (403 otherwise); the unix socket is guarded by its file mode."""
    allow = tuple(allow)
    allowed_text = ", ".join(map(str, allow)) or "nothing"

    @web.middleware
    async def check_peer(request: web.Request, handler) -> web.StreamResponse:
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport else None
        if sock is not None and sock.family == socket.AF_UNIX:
            return await handler(request)
        peer = transport.get_extra_info("peername") if transport else None
        addr = ipaddress.ip_address(peer[0].split("%")[0]) if isinstance(peer, tuple) else None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if addr is None or not any(addr in net for net in allow):
            return error(403, f"admin API access from {addr or 'an unknown peer'} refused: "
                              f"not in daemon.admin_allow ({allowed_text})")
        if (foreign := foreign_request(request.headers)) is not None:
            return error(403, foreign)
        return await handler(request)

    return check_peer


def make_app(service: Service, allow: Iterable = ADMIN_ALLOW_DEFAULT) -> web.Application:
    """`allow`: the networks TCP clients may come from (unix-socket clients are always served)."""
    from varpd.admin import routes_health, routes_lookup, routes_metrics, routes_overlays, routes_vnics

    app = web.Application(client_max_size=MAX_BODY,
                          middlewares=[access_middleware(allow), json_body_middleware, errors_middleware])
    app[SERVICE] = service
    app.add_routes(routes_health.routes)
    app.add_routes(routes_overlays.routes)
    app.add_routes(routes_lookup.routes)
    app.add_routes(routes_metrics.routes)
    app.add_routes(routes_vnics.routes)
    return app
