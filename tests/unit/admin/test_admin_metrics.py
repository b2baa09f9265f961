"""/metrics: Prometheus text that a Prometheus parser reads back, with the daemon's counters."""

import time

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from varpd.admin.app import make_app
from varpd.config.daemon import DaemonSettings, OverlayConfig
from varpd.daemon.overlay import OverlayRuntime


class OneOverlay:
    ready = True
    started_at = time.time()

    def __init__(self, rt):
        self.rt = rt

    def overlays(self):
        return [self.rt]


async def test_metrics_expose_counters_and_latency():
    rt = OverlayRuntime(OverlayConfig(name="vx23", vni=23, search="files", properties={
        "vxlan/listen_ip": "192.0.2.1", "files/config": "/h.json"}), DaemonSettings())
    rt.validate()
    rt.status = "ONLINE"
    rt.counters.update(misses_l2=5, misses_l3=2, fdb_programmed=7, lookups_answered=3, lookups_unknown=1)
    for seconds in (0.00003, 0.0004, 0.02):
        rt.lookup_latency.observe(seconds)
    async with TestClient(TestServer(make_app(OneOverlay(rt)))) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200 and resp.content_type == "text/plain"
        text = await resp.text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    lbl = lambda **kw: tuple(sorted({"overlay": "vx23", "plugin": "files", **kw}.items()))  # noqa: E731
    assert samples[("varpd_misses_total", lbl(kind="l2"))] == 5
    assert samples[("varpd_misses_total", lbl(kind="l3"))] == 2
    assert samples[("varpd_entries_programmed_total", lbl(table="fdb"))] == 7
    assert samples[("varpd_lookups_total", lbl(result="unknown"))] == 1
    assert samples[("varpd_overlay_online", lbl(mode="push"))] == 1
    assert samples[("varpd_lookup_latency_seconds_bucket", lbl(le="0.0005"))] == 2
    assert samples[("varpd_lookup_latency_seconds_count", lbl())] == 3
