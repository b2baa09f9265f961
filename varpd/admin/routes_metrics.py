"""GET /metrics: Prometheus text format, read from the daemon's counters at scrape time.

A custom collector (prometheus_client) rather than live metric objects: the
runtimes already count everything on their hot paths, overlays come and go, and
a scrape should cost the daemon nothing between scrapes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from varpd.admin.app import ADMIN_LISTENERS, SERVICE

routes = web.RouteTableDef()

# (metric, help, label name, {label value: counter key})
_COUNTERS = (
    ("varpd_misses", "kernel misses reported (RTM_GETNEIGH)", "kind", {"l2": "misses_l2", "l3": "misses_l3"}),
    ("varpd_lookups", "backend lookups by result", "result",
     {"answered": "lookups_answered", "unknown": "lookups_unknown"}),
    ("varpd_cache", "lookups answered by the cache, and refused by the per-destination rate limit", "result",
     {"hit": "cache_hits", "negative_hit": "cache_negative_hits", "rate_limited": "cache_rate_limited"}),
    ("varpd_entries_programmed", "kernel entries added or replaced", "table",
     {"fdb": "fdb_programmed", "neigh": "neigh_programmed"}),
    ("varpd_entries_removed", "kernel entries removed", "table", {"fdb": "fdb_removed", "neigh": "neigh_removed"}),
    ("varpd_errors", "errors by kind", "kind",
     {"program": "program_errors", "task": "errors", "malformed_frame": "frames_malformed"}),
    ("varpd_mapping_changes", "mapping changes applied (reloads, watch events)", "source",
     {"backend": "mapping_changes"}),
    ("varpd_reconciles", "reconciler passes, and those that repaired the kernel", "result",
     {"pass": "reconciles", "repair": "reconcile_repairs"}),
    ("varpd_safety_checks", "periodic checks of the kernel's tables (a full pass follows one that differs)", "result",
     {"same": "checks", "differs": "check_differences"}),
    ("varpd_drift_repairs", "kernel entries put back after a change behind varpd's back (kernel events)", "table",
     {"any": "drift_repairs"}),
    ("varpd_events_lost", "times kernel events were lost (ENOBUFS) and state re-read", "cause", {"enobufs": "events_lost"}),
    ("varpd_dhcp", "DHCP frames handled", "action",
     {"proxied": "dhcp_proxied", "native": "dhcp_native_replies", "dropped": "dhcp_dropped"}),
    ("varpd_frames_dropped", "guest frames (ARP, NDP, DHCP) refused before handling", "reason",
     {"rate_limited": "frames_rate_limited", "bad_checksum": "frames_bad_checksum"}),
)


class VarpdCollector:
    def __init__(self, service, listeners=()) -> None:
        self.service = service
        self.listeners = listeners

    def collect(self):
        overlays = self.service.overlays()
        up = GaugeMetricFamily("varpd_overlay_online", "1 if the overlay is ONLINE, 0 if DEGRADED",
                               labels=["overlay", "plugin", "mode"])
        entries = GaugeMetricFamily("varpd_cache_entries", "answers held in the lookup cache", labels=["overlay"])
        families = {name: CounterMetricFamily(name, text, labels=["overlay", "plugin", label])
                    for name, text, label, _ in _COUNTERS}
        latency = HistogramMetricFamily("varpd_lookup_latency_seconds", "time a backend took to answer a lookup",
                                        labels=["overlay", "plugin"])
        for rt in overlays:
            d = rt.describe()
            counters, plugin = d["counters"], d["plugin"]
            up.add_metric([rt.name, plugin, d["mode"]], 1.0 if d["status"] == "ONLINE" else 0.0)
            entries.add_metric([rt.name], counters.get("cache_entries", 0))
            for name, _, _, keys in _COUNTERS:
                for value, key in keys.items():
                    families[name].add_metric([rt.name, plugin, value], counters.get(key, 0))
            hist = rt.lookup_latency
            latency.add_metric([rt.name, plugin], hist.cumulative(), hist.total)
        yield up
        yield entries
        yield from families.values()
        yield latency
        yield from self._backend_metrics(overlays)
        yield from self._admin_connections()

    def _backend_metrics(self, overlays):
        """Samples backends report themselves (evpn: routes, sessions), one family per name."""
        found: dict[str, Any] = {}
        for rt in overlays:
            report = getattr(getattr(rt, "backend", None), "metrics", None)
            for m in report() if report is not None else ():
                names = ["overlay", "plugin", *(k for k, _ in m.labels)]
                family = found.get(m.name)
                if family is None:
                    cls = CounterMetricFamily if m.kind == "counter" else GaugeMetricFamily
                    family = found[m.name] = (cls(m.name, m.help, labels=names), names)
                family[0].add_metric([rt.name, rt.cfg.search, *(v for _, v in m.labels)], m.value)
        for family, _ in found.values():
            yield family

    def _admin_connections(self):
        """The admin listeners' open connections, and those refused beyond the cap (varpd.admin.limits)."""
        open_ = GaugeMetricFamily("varpd_admin_connections", "open admin API connections", labels=["listener"])
        refused = CounterMetricFamily("varpd_admin_connections_refused",
                                      "admin API connections closed at once: the listener was at its cap",
                                      labels=["listener"])
        for gate in self.listeners:
            open_.add_metric([gate.listener], gate.active)
            refused.add_metric([gate.listener], gate.refused)
        yield open_
        yield refused


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VarpdCollector(request.app[SERVICE], request.app.get(ADMIN_LISTENERS, ())))
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
