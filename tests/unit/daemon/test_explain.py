"""explain_lookup's order (override, cache, backend) and side effects, with the real files backend."""
from __future__ import annotations

import ipaddress

import pytest

from varpd.backend.base import OverlayContext
from varpd.config.daemon import DaemonSettings, OverlayConfig
from varpd.daemon.errors import VarpdError
from varpd.daemon.explain import cache_stats, explain_lookup
from varpd.daemon.overlay import OverlayRuntime
from varpd.lab import seed_hosts, write_hosts_json
from varpd.model import Destination

H1, H2 = seed_hosts(2)


@pytest.fixture
async def rt(tmp_path):
    hosts = tmp_path / "hosts.json"
    write_hosts_json(hosts, [H1, H2])
    rt = OverlayRuntime(OverlayConfig(name="vx9", vni=9, search="files", mode="on-demand",
                                      properties={"vxlan/listen_ip": H1.underlay_ip, "files/config": str(hosts)}),
                        DaemonSettings(miss_rate_limit=60))
    rt.validate()
    rt.backend = rt.backend_cls(OverlayContext("vx9", 9, rt.local.ip, rt.local.port), rt.values)
    await rt.backend.start()
    yield rt
    await rt.backend.stop()


async def test_backend_then_cache_and_the_rate_limiter_is_not_armed(rt):
    first = await explain_lookup(rt, H2.guest_mac)
    assert (first["answer"], first["origin"], first["stored_in_cache"]) == (f"{H2.underlay_ip}:4789", "backend", True)
    assert first["backend"]["plugin"] == "files" and first["kernel"] == [] and first["local"] is False
    second = await explain_lookup(rt, H2.guest_mac)
    assert second["origin"] == "cache" and second["cache"]["ttl_remaining"] <= 300
    assert rt.cache.allow_lookup(H2.guest_mac)  # a miss right after is not refused by the admin's lookup
    stats = cache_stats(rt)
    assert (stats["positive"], stats["hits"], stats["misses"], stats["overlay"]) == (1, 1, 1, "vx9")


async def test_fresh_neither_reads_nor_writes_the_cache(rt):
    out = await explain_lookup(rt, ipaddress.ip_address(H2.guest_ip4), fresh=True)
    assert (out["kind"], out["answer"], out["origin"], out["cache"]) == ("arp", H2.guest_mac, "backend", None)
    assert len(rt.cache) == 0 and rt.cache.hits == rt.cache.misses == 0


async def test_override_wins_and_an_ips_dropped_mac_is_flagged(rt):
    rt.overrides[H2.guest_mac] = None
    out = await explain_lookup(rt, H2.guest_mac)
    assert (out["answer"], out["origin"], out["backend"]) == ("drop", "override", None)
    ip = await explain_lookup(rt, ipaddress.ip_address(H2.guest_ip6))
    assert (ip["kind"], ip["answer"], ip["mac_override"]) == ("ndp", H2.guest_mac, "drop")
    rt.overrides[H2.guest_mac] = Destination(ipaddress.ip_address("192.0.2.9"), 4789)
    fresh = await explain_lookup(rt, H2.guest_mac, fresh=True)
    assert fresh["answer"] == "192.0.2.9:4789" and fresh["backend"]["answer"] == f"{H2.underlay_ip}:4789"


async def test_unknown_is_negative_and_own_mac_is_local(rt):
    assert (await explain_lookup(rt, "02:00:00:00:00:42"))["answer"] == "unknown"
    assert (await explain_lookup(rt, "02:00:00:00:00:42"))["cache"]["negative"] is True
    assert (await explain_lookup(rt, H1.guest_mac))["local"] is True


async def test_no_backend_is_an_error_naming_the_overlay(rt):
    backend, rt.backend = rt.backend, None
    try:
        with pytest.raises(VarpdError, match="overlay 'vx9' has no running backend"):
            await explain_lookup(rt, H2.guest_mac)
    finally:
        rt.backend = backend


async def test_push_mode_asks_the_backend_and_leaves_the_cache_alone(rt):
    rt.mode = "push"
    for _ in range(2):
        out = await explain_lookup(rt, H2.guest_mac)
        assert (out["origin"], out["stored_in_cache"]) == ("backend", False)
    assert len(rt.cache) == 0 and rt.cache.misses == 0
