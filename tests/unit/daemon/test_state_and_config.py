import json

import pytest

from varpd.backend.errors import ConfigError, PropertyError
from varpd.config.daemon import OverlayConfig, load_config
from varpd.daemon.overlay_props import DAEMON_PROPERTIES, native_dhcp
from varpd.backend.properties import resolve
from varpd.daemon.state import StateStore

CFG = OverlayConfig(name="vx23", vni=23, search="files", bridge="br0",
                    properties={"vxlan/listen_ip": "192.0.2.1", "files/config": "/etc/hosts.json"})


def test_state_round_trip_and_corruption_is_skipped(tmp_path, caplog):
    store = StateStore(tmp_path)
    store.save(CFG)
    store.save(CFG.model_copy(update={"name": "vx24", "vni": 24}))
    assert [c.name for c in store.load_all()] == ["vx23", "vx24"]
    path = tmp_path / "overlays" / "vx24.json"
    doc = json.loads(path.read_text())
    doc["overlay"]["vni"] = 99
    path.write_text(json.dumps(doc))
    assert [c.name for c in store.load_all()] == ["vx23"]
    assert "checksum mismatch" in caplog.text
    store.delete("vx23")
    assert store.load_all() == []


def test_config_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[overlays]]\nname = "vx23"\nvni = 99999999\nsearch = "files"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: overlays.0.vni: .*16777215"):
        load_config(bad)
    bad.write_text("[[overlays]\n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_yaml_config(tmp_path):
    y = tmp_path / "varpd.yaml"
    y.write_text("daemon: {reconcile_interval: 2}\noverlays:\n- {name: vx23, vni: 23, search: direct}\n")
    cfg = load_config(y)
    assert cfg.daemon.reconcile_interval == 2 and cfg.overlays[0].search == "direct"


def test_native_dhcp_settings():
    values = resolve(DAEMON_PROPERTIES, {"vxlan/listen_ip": "192.0.2.1", "dhcp/native": "true",
                                         "dhcp/subnet": "10.55.55.0/24", "dhcp/dns": "10.55.55.1, 10.55.55.2"})
    nd = native_dhcp(values)
    assert str(nd.server_ip) == "10.55.55.254" and nd.lease == 3600 and len(nd.dns) == 2
    values["dhcp/subnet"] = None
    with pytest.raises(PropertyError, match="dhcp/subnet"):
        native_dhcp(values)


def test_native_dhcp_server_id_is_an_unused_address_of_the_subnet():
    """varpd answers ARP for the server identifier (renewals are unicast to it): never the router."""
    base = {"vxlan/listen_ip": "192.0.2.1", "dhcp/native": "true", "dhcp/subnet": "10.55.55.0/24",
            "dhcp/router": "10.55.55.1", "dhcp/lease": "10"}
    nd = native_dhcp(resolve(DAEMON_PROPERTIES, base))
    assert str(nd.server_ip) == "10.55.55.254" and nd.lease == 10
    for bad, why in (("10.55.55.1", "is the router"), ("10.66.0.1", "not a host address"),
                     ("10.55.55.255", "not a host address")):
        with pytest.raises(PropertyError, match=f"dhcp/server_ip: .*{why}"):
            native_dhcp(resolve(DAEMON_PROPERTIES, base | {"dhcp/server_ip": bad}))


def test_listen_ip_is_required():
    with pytest.raises(PropertyError, match="vxlan/listen_ip: unset required property"):
        resolve(DAEMON_PROPERTIES, {})


def test_what_varpd_created_survives_and_is_forgotten_on_delete(tmp_path):
    store = StateStore(tmp_path)
    assert store.load_created("vx23") == (False, False)
    store.save_created("vx23", True, True)
    assert StateStore(tmp_path).load_created("vx23") == (True, True)
    store.delete("vx23")
    assert store.load_created("vx23") == (False, False)
