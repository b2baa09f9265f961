"""Creating an overlay is refused before anything touches the kernel when the plugin can't serve it."""

import pytest

from varpd.backend import registry
from varpd.backend.base import Backend, DestType
from varpd.backend.errors import BackendError, PluginNotFound, PropertyError
from varpd.config.daemon import DaemonSettings, OverlayConfig
from varpd.daemon.overlay import OverlayRuntime


class EthernetOnly(Backend):
    name = "ethonly"
    dest_types = DestType.ETHERNET


def runtime(search: str, **props) -> OverlayRuntime:
    return OverlayRuntime(OverlayConfig(name="vx9", vni=9, search=search,
                                        properties={"vxlan/listen_ip": "192.0.2.1", **props}), DaemonSettings())


def test_plugin_that_cannot_serve_ip_and_port_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "load", lambda name: EthernetOnly)
    with pytest.raises(BackendError, match=r"cannot serve vxlan destinations"):
        runtime("ethonly").validate()


def test_unknown_plugin_and_property_and_mode():
    with pytest.raises(PluginNotFound, match="unknown plugin 'nope'"):
        runtime("nope").validate()
    with pytest.raises(PropertyError, match="files/nope: unknown property"):
        runtime("files", **{"files/config": "/h.json", "files/nope": "1"}).validate()
    with pytest.raises(PropertyError, match="vxlan/listen_ip: 224.0.0.1 is a multicast address, not a VTEP"):
        runtime("files", **{"files/config": "/h.json", "vxlan/listen_ip": "224.0.0.1"}).validate()


@pytest.mark.parametrize("ip, words", [
    ("0.0.0.0", "is the unspecified address"), ("127.0.0.1", "is a loopback address"),
    ("255.255.255.255", "is the broadcast address"), ("ff02::1", "is a multicast address"),
    ("::1", "is a loopback address"), ("::ffff:192.0.2.1", "is IPv4-mapped: write the IPv4 address 192.0.2.1"),
])
def test_listen_ip_must_be_a_vtep_address(ip, words):
    with pytest.raises(PropertyError, match=f"vxlan/listen_ip: .*{words}"):
        runtime("files", **{"files/config": "/h.json", "vxlan/listen_ip": ip}).validate()


def test_auto_mode_follows_the_backend():
    rt = runtime("files", **{"files/config": "/h.json"})
    rt.validate()
    assert rt.mode == "push"
    rt = runtime("direct", **{"direct/dest_ip": "192.0.2.2"})
    rt.validate()
    assert rt.mode == "point"
    rt = runtime("http", **{"http/url": "http://192.0.2.254:8080"})
    rt.validate()
    assert rt.mode == "on-demand"
