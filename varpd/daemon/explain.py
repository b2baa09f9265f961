"""Why an overlay answers a lookup the way it does: the answer, where it came from, what the kernel holds.

The daemon answers a kernel miss from, in order, the administrator's entries
(modify-overlay -s/drop), its LookupCache, then the backend.  `explain_lookup`
walks the same order for one MAC or overlay IP, so an operator sees the answer a
miss would get now, without sending traffic (admin API `GET .../lookup`).

Side effects, chosen to match what a miss would do and nothing more:
- on-demand mode: a cache read counts as a hit/miss; a backend answer is stored
  in the cache (positive for `ttl`, negative for `negative_ttl`), exactly as a
  miss would store it.  The per-destination rate limiter is neither consulted
  nor armed: an administrator's lookup is never refused and never delays a miss.
- fresh, and push/point mode (where the mapping, not the cache, is what the
  kernel is programmed from, and mapping changes do not invalidate the cache):
  the backend is asked directly; the cache is only looked at (shown as `cache`,
  no hit or miss counted) and never written, so an answer that differs from a
  cached one changes nothing (modify-overlay -d does).
Kernel entries are never programmed or removed here; daemon lookup counters and
the latency histogram (misses' metrics) are left alone.
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any

from varpd.daemon.backend_views import detail as backend_detail
from varpd.daemon.backend_views import entries as kernel_entries
from varpd.daemon.errors import VarpdError
from varpd.model.cache import MISSING, CachedAnswer
from varpd.model.overrides import format_override

if TYPE_CHECKING:
    from varpd.daemon.overlay import OverlayRuntime

LookupKey = str | IPv4Address | IPv6Address  # a normalised MAC, or an overlay IP


def _kind(key: LookupKey) -> str:
    if isinstance(key, str):
        return "mac"
    return "arp" if key.version == 4 else "ndp"


def _render(value: Any) -> str:
    """A MAC's destination (ip:port), an IP's MAC, or 'unknown' for a negative answer."""
    return "unknown" if value is None else str(value)


def _cache_view(entry: CachedAnswer | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {"answer": _render(entry.value), "negative": entry.negative,
            "age": round(entry.age, 3), "ttl_remaining": round(entry.remaining, 3)}


async def _ask_backend(rt: OverlayRuntime, key: LookupKey) -> tuple[Any, dict[str, Any]]:
    backend = rt.backend
    if backend is None:
        raise VarpdError(f"overlay {rt.name!r} has no running backend ({rt.status}: {rt.details or 'not started'})")
    kind = _kind(key)
    call = backend.lookup if kind == "mac" else (backend.arp if kind == "arp" else backend.ndp)
    t0 = time.perf_counter()
    value = await call(key)
    elapsed = time.perf_counter() - t0
    return value, {"plugin": rt.cfg.search, "answer": _render(value), "elapsed_ms": round(elapsed * 1000, 3)}


async def explain_lookup(rt: OverlayRuntime, key: LookupKey, *, fresh: bool = False) -> dict[str, Any]:
    """The answer for `key` and its origin (override, cache or backend), plus the kernel's entries for it."""
    kind = _kind(key)
    target = key if isinstance(key, str) else str(key)
    out: dict[str, Any] = {"overlay": rt.name, "mode": rt.mode, "kind": kind, "query": target, "fresh": fresh,
                           "answer": "unknown", "origin": None, "cache": None, "backend": None,
                           "stored_in_cache": False}
    value: Any = None
    if kind == "mac" and key in rt.overrides:
        value = rt.overrides[key]
        out.update(answer=format_override(value), origin="override", cache=_cache_view(rt.cache.entry(key)))
        if fresh:  # what the backend would say once the override is deleted
            out["backend"] = (await _ask_backend(rt, key))[1]
    else:
        use_cache = rt.mode == "on-demand" and not fresh
        cached = rt.cache.get(key) if use_cache else MISSING
        if cached is not MISSING:
            value = cached
            out.update(answer=_render(value), origin="cache", cache=_cache_view(rt.cache.entry(key)))
        else:
            out["cache"] = None if use_cache else _cache_view(rt.cache.entry(key))
            value, out["backend"] = await _ask_backend(rt, key)
            out.update(answer=_render(value), origin="backend")
            if use_cache:
                rt.cache.put(key, value)
                out["stored_in_cache"] = True
        if kind != "mac" and value in rt.overrides:  # the IP's MAC is hand-set or dropped
            out["mac_override"] = format_override(rt.overrides[value])
    if kind == "mac" and value is not None and rt.local is not None:
        out["local"] = value.ip == rt.local.ip  # a VNIC of this host: reached through the bridge, never programmed
    if (route := backend_detail(rt, key if kind == "mac" else value)) is not None:
        out["route"] = route  # e.g. evpn: the RD, next hop and sequence number the answer came from
    entries = await kernel_entries(rt)
    out["kernel"] = [e for e in entries if e["target"] == target]
    return out


def cache_stats(rt: OverlayRuntime) -> dict[str, Any]:
    """The overlay's LookupCache counters and what on-demand resolution has programmed."""
    stats: dict[str, Any] = {"overlay": rt.name, "mode": rt.mode}
    stats.update(rt.cache.stats())
    fdb, neigh = rt.strategy.installed() if rt.strategy else (0, 0)
    stats.update(installed_fdb=fdb, installed_neigh=neigh, overrides=len(rt.overrides))
    return stats
