"""Typed properties: parsing of each type, ranges, choices, unknown and unset required properties."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from varpd.backend.errors import PropertyError
from varpd.backend.properties import MAX_STRING, PropertySpec, PropType, Protection, resolve


def spec(type_: PropType, **kw) -> PropertySpec:
    return PropertySpec("test/p", type_, **kw)


@pytest.mark.parametrize("raw,value", [("5", 5), ("-5", -5), (7, 7), ("0x10", 16), (" 3 ", 3)])
def test_int(raw, value):
    assert spec(PropType.INT).parse(raw) == value


@pytest.mark.parametrize("raw", ["x", "1.5", True, ""])
def test_int_refuses(raw):
    with pytest.raises(PropertyError, match=r"property test/p: .* is not a valid int"):
        spec(PropType.INT).parse(raw)


def test_uint():
    assert spec(PropType.UINT).parse("42") == 42
    with pytest.raises(PropertyError, match="-1 is negative"):
        spec(PropType.UINT).parse("-1")


def test_ranges():
    s = spec(PropType.UINT, minimum=1, maximum=65535)
    assert s.parse("1") == 1 and s.parse("65535") == 65535
    with pytest.raises(PropertyError, match="0 is below the minimum 1"):
        s.parse("0")
    with pytest.raises(PropertyError, match="65536 is above the maximum 65535"):
        s.parse("65536")
    assert s.possible() == "1-65535"
    assert spec(PropType.INT).possible() == "--"


def test_ip():
    s = spec(PropType.IP)
    assert s.parse("192.0.2.1") == IPv4Address("192.0.2.1")
    assert s.parse(" 2001:db8::1 ") == IPv6Address("2001:db8::1")
    with pytest.raises(PropertyError, match="is not a valid ip"):
        s.parse("192.0.2")


def test_string():
    s = spec(PropType.STRING)
    assert s.parse("/etc/hosts.json") == "/etc/hosts.json"
    assert s.parse("x" * MAX_STRING) == "x" * MAX_STRING
    with pytest.raises(PropertyError, match=f"longer than {MAX_STRING} bytes"):
        s.parse("x" * (MAX_STRING + 1))
    with pytest.raises(PropertyError, match="longer than"):
        s.parse("é" * (MAX_STRING // 2 + 1))  # bytes, not characters


@pytest.mark.parametrize("raw,value", [("true", True), ("YES", True), ("on", True), ("1", True), (True, True),
                                       ("false", False), ("no", False), ("off", False), ("0", False),
                                       (False, False)])
def test_bool(raw, value):
    assert spec(PropType.BOOL).parse(raw) is value


def test_bool_refuses():
    with pytest.raises(PropertyError, match="expected true or false"):
        spec(PropType.BOOL).parse("maybe")


def test_choices():
    s = spec(PropType.STRING, choices=("push", "on-demand"))
    assert s.parse("push") == "push"
    with pytest.raises(PropertyError, match="'pull' is not one of push, on-demand"):
        s.parse("pull")
    assert s.possible() == "push,on-demand"


def test_names_must_be_module_slash_name():
    for bad in ("noslash", "/x", "x/", "m/" + "x" * 64):
        with pytest.raises(ValueError):
            PropertySpec(bad, PropType.INT)


SPECS = (
    PropertySpec("m/req", PropType.IP, Protection.REQUIRED),
    PropertySpec("m/port", PropType.UINT, default=4789, minimum=1, maximum=65535),
    PropertySpec("m/opt", PropType.STRING),
)


def test_resolve_fills_defaults_and_parses():
    values = resolve(SPECS, {"m/req": "192.0.2.1"})
    assert values == {"m/req": IPv4Address("192.0.2.1"), "m/port": 4789}
    assert resolve(SPECS, {"m/req": "192.0.2.1", "m/port": "1", "m/opt": "x"})["m/port"] == 1


def test_resolve_unknown_property():
    with pytest.raises(PropertyError) as info:
        resolve(SPECS, {"m/req": "192.0.2.1", "m/nope": "1"})
    assert str(info.value) == "property m/nope: unknown property" and info.value.name == "m/nope"


def test_resolve_lets_known_foreign_names_through():
    values = resolve(SPECS, {"m/req": "192.0.2.1", "vxlan/listen_ip": "x"}, known=["vxlan/listen_ip"])
    assert "vxlan/listen_ip" not in values


def test_resolve_unset_required():
    with pytest.raises(PropertyError) as info:
        resolve(SPECS, {"m/port": "4789"})
    assert str(info.value) == "property m/req: unset required property"


def test_resolve_checks_ranges():
    with pytest.raises(PropertyError, match="m/port: 0 is below the minimum 1"):
        resolve(SPECS, {"m/req": "192.0.2.1", "m/port": "0"})


def test_required_flag():
    assert SPECS[0].required and not SPECS[1].required


def test_secret_values_are_never_shown():
    from varpd.config.daemon import DaemonSettings, OverlayConfig
    from varpd.daemon.overlay import OverlayRuntime

    cfg = OverlayConfig(name="vx9", vni=9, search="http", properties={
        "vxlan/listen_ip": "192.0.2.1", "http/url": "http://192.0.2.254:8080", "http/token": "s3cret"})
    rt = OverlayRuntime(cfg, DaemonSettings())
    rt.validate()
    shown = {p["property"]: p["value"] for p in rt.describe()["properties"]}
    assert shown["http/token"] == "********" and "s3cret" not in str(rt.describe())
    assert shown["http/url"] == "http://192.0.2.254:8080"
