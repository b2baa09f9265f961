"""/v1/overlays/{name}/lookup and /cache: one lookup's answer and origin, and the cache's counters.

The logic lives in varpd.daemon.explain; these routes only parse the query.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from varpd.admin.app import SERVICE, BadRequest
from varpd.daemon.explain import LookupKey, cache_stats, explain_lookup
from varpd.packet.errors import PacketError
from varpd.packet.mac import normalize_mac

routes = web.RouteTableDef()

_TRUE, _FALSE = {"1", "true", "yes"}, {"", "0", "false", "no"}


def _lookup_key(query) -> LookupKey:
    """Exactly one of ?mac=MAC or ?ip=IP[%ZONE], parsed; BadRequest naming the parameter otherwise."""
    given = [p for p in ("mac", "ip") if p in query]
    if len(given) != 1:
        raise BadRequest("give exactly one of the query parameters mac=MAC or ip=IP")
    text = query[given[0]].strip()
    if given[0] == "mac":
        try:
            return normalize_mac(text)
        except PacketError:
            raise BadRequest(f"mac: {text!r} is not a MAC address (expected aa:bb:cc:dd:ee:ff)") from None
    # a zone (fe80::4%eth0) names the link an address is on: here the overlay is that link, so
    # the zone is dropped; kept, it would make the address unequal to the mapping's fe80::4
    address, _, zone = text.partition("%")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise BadRequest(f"ip: {text!r} is not an IPv4 or IPv6 address") from None
    if zone and ip.version == 4:
        raise BadRequest(f"ip: {text!r}: an IPv4 address has no zone (%{zone})")
    return ip


def _flag(query, name: str) -> bool:
    value = query.get(name, "0").strip().lower()
    if value not in _TRUE | _FALSE:
        raise BadRequest(f"{name}: {value!r} is not a boolean (1 or 0)")
    return value in _TRUE


@routes.get("/v1/overlays/{name}/lookup")
async def lookup(request: web.Request) -> web.Response:
    """?mac=MAC | ?ip=IP [&fresh=1]: the answer a miss would get now, where it came from, the kernel's entries."""
    key = _lookup_key(request.query)
    fresh = _flag(request.query, "fresh")
    rt = request.app[SERVICE].get(request.match_info["name"])
    return web.json_response(await explain_lookup(rt, key, fresh=fresh))


@routes.get("/v1/overlays/{name}/cache")
async def cache(request: web.Request) -> web.Response:
    """The lookup cache's entries (positive, negative), hits, misses, evictions, rate-limited lookups, TTLs."""
    return web.json_response(cache_stats(request.app[SERVICE].get(request.match_info["name"])))
