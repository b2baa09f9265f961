"""A miss for a group MAC or a non-unicast address is answered "unknown" without asking the backend:
no mapping holds one, and an http/svp server would otherwise see a request per such miss."""
from ipaddress import ip_address

import pytest

from varpd.config.daemon import DaemonSettings, OverlayConfig
from varpd.daemon.overlay import OverlayRuntime


class _Backend:
    def __init__(self) -> None:
        self.asked: list = []

    async def lookup(self, mac):
        self.asked.append(mac)
        return None

    async def arp(self, ip):
        self.asked.append(ip)
        return None

    ndp = arp


@pytest.fixture
def rt() -> OverlayRuntime:
    rt = OverlayRuntime(OverlayConfig(name="vx9", vni=9, search="http",
                                      properties={"vxlan/listen_ip": "192.0.2.1", "http/url": "http://192.0.2.254"}),
                        DaemonSettings())
    rt.validate()
    assert rt.mode == "on-demand"
    rt.backend = _Backend()
    return rt


@pytest.mark.parametrize("mac", ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:fb", "33:33:00:00:00:01", "00:00:00:00:00:00"])
async def test_group_macs_are_never_looked_up(rt, mac):
    assert await rt.strategy.resolve_mac(mac) is None
    assert rt.backend.asked == [] and rt.counters["misses_not_vnic"] == 1


@pytest.mark.parametrize("ip", ["224.0.0.251", "255.255.255.255", "0.0.0.0", "ff02::1", "::"])
async def test_non_unicast_targets_are_never_looked_up(rt, ip):
    await rt.strategy.resolve_ip(ip_address(ip))
    assert rt.backend.asked == [] and rt.counters["misses_not_vnic"] == 1


async def test_a_unicast_mac_is_still_asked(rt):
    assert await rt.strategy.resolve_mac("02:08:20:00:00:01") is None
    assert rt.backend.asked == ["02:08:20:00:00:01"] and rt.counters["misses_unanswered"] == 1
