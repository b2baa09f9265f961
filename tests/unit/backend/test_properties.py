"""Typed properties: parsing of each type, ranges, choices, unknown and unset required properties."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from varpd.backend.errors import PropertyError
from varpd.backend.properties import MAX_STRING, PropertySpec, PropType, Protection, resolve


def spec(type_: PropType, **kw) -> PropertySpec:
    return PropertySpec("test/p", type_, **kw)


@pytest.mark.parametrize("raw,value", [("5", 5), ("-5", -5), (7, 7), ("0x10", 16), ("0X1f", 31), (" 3 ", 3),
                                       ("0o17", 15), ("0b101", 5)])
def test_int(raw, value):
    assert spec(PropType.INT).parse(raw) == value


@pytest.mark.parametrize("raw", ["x", "1.5", True, "", None])
def test_int_refuses(raw):
    with pytest.raises(PropertyError) as info:
        spec(PropType.INT).parse(raw)
    assert info.value.name == "test/p"
    assert str(info.value).startswith(f"property test/p: {raw!r} is not a valid int")


def test_uint():
    assert spec(PropType.UINT).parse("42") == 42
    assert spec(PropType.UINT).parse("0x10") == 16
    assert spec(PropType.UINT).parse("0") == 0
    with pytest.raises(PropertyError, match="^property test/p: -1 is negative$"):
        spec(PropType.UINT).parse("-1")


def test_ranges():
    s = spec(PropType.UINT, minimum=1, maximum=65535)
    assert s.parse("1") == 1 and s.parse("65535") == 65535
    with pytest.raises(PropertyError, match="^property test/p: 0 is below the minimum 1$"):
        s.parse("0")
    with pytest.raises(PropertyError, match="^property test/p: 65536 is above the maximum 65535$"):
        s.parse("65536")
    assert s.possible() == "1-65535"
    assert spec(PropType.INT, maximum=5).possible() == "<=5"  # no minimum; "-5" would read as minus five
    assert spec(PropType.INT, minimum=-5).possible() == ">=-5"
    assert spec(PropType.UINT, maximum=3600).possible() == "0-3600"  # was "-3600" (issue #11, 14)
    assert spec(PropType.INT).possible() == "--"


def test_ip():
    s = spec(PropType.IP)
    assert s.parse("192.0.2.1") == IPv4Address("192.0.2.1")
    assert s.parse(" 2001:db8::1 ") == IPv6Address("2001:db8::1")
    with pytest.raises(PropertyError, match="property test/p: '192.0.2' is not a valid ip"):
        s.parse("192.0.2")


def test_string():
    s = spec(PropType.STRING)
    assert s.parse("/etc/hosts.json") == "/etc/hosts.json"
    assert s.parse("x" * MAX_STRING) == "x" * MAX_STRING
    with pytest.raises(PropertyError, match=f"longer than {MAX_STRING} bytes"):
        s.parse("x" * (MAX_STRING + 1))
    with pytest.raises(PropertyError, match="longer than"):
        s.parse("é" * (MAX_STRING // 2 + 1))  # bytes, not characters
    assert s.parse("é" * (MAX_STRING // 2)) == "é" * (MAX_STRING // 2)  # exactly MAX_STRING bytes


@pytest.mark.parametrize("raw,value", [("true", True), ("YES", True), ("TRUE", True), ("on", True), (" On ", True),
                                       ("1", True), (True, True), (1, True),
                                       ("false", False), ("no", False), ("off", False), ("0", False),
                                       (False, False), (0, False)])
def test_bool(raw, value):
    assert spec(PropType.BOOL).parse(raw) is value


@pytest.mark.parametrize("raw", ["maybe", "2", ""])
def test_bool_refuses(raw):
    with pytest.raises(PropertyError, match=rf"^property test/p: {raw!r} is not a valid bool \(expected true or false\)"):
        spec(PropType.BOOL).parse(raw)


def test_choices():
    s = spec(PropType.STRING, choices=("push", "on-demand"))
    assert s.parse("push") == "push"
    with pytest.raises(PropertyError, match="^property test/p: 'pull' is not one of push, on-demand$"):
        s.parse("pull")
    assert s.possible() == "push,on-demand"


@pytest.mark.parametrize("bad", ["noslash", "/x", "x/", "", "m/" + "x" * 63, "m/" + "x" * 64])
def test_names_must_be_module_slash_name(bad):
    with pytest.raises(ValueError, match="is not <module>/<name> of at most 64 bytes"):
        PropertySpec(bad, PropType.INT)


def test_longest_name_accepted_and_protection():
    s = PropertySpec("m/" + "x" * 62, PropType.STRING, Protection.REQUIRED)
    assert s.required
    assert Protection.READ.value == "r-" and Protection.WRITE.value == "rw" and Protection.REQUIRED.value == "rw*"


SPECS = (
    PropertySpec("m/req", PropType.IP, Protection.REQUIRED),
    PropertySpec("m/port", PropType.UINT, default=4789, minimum=1, maximum=65535),
    PropertySpec("m/opt", PropType.STRING),
    PropertySpec("m/flag", PropType.BOOL, default="yes"),
)


def test_resolve_fills_defaults_and_parses():
    values = resolve(SPECS, {"m/req": "192.0.2.1"})
    assert values == {"m/req": IPv4Address("192.0.2.1"), "m/port": 4789, "m/flag": True}  # defaults are parsed too
    assert resolve(SPECS, {"m/req": "192.0.2.1", "m/port": "1", "m/opt": "x"})["m/port"] == 1


def test_resolve_unknown_property():
    with pytest.raises(PropertyError) as info:
        resolve(SPECS, {"m/req": "192.0.2.1", "m/nope": "1"})
    assert str(info.value) == "property m/nope: unknown property" and info.value.name == "m/nope"


def test_resolve_lets_known_foreign_names_through():
    values = resolve(SPECS, {"m/req": "192.0.2.1", "vxlan/listen_ip": "x"}, known=["vxlan/listen_ip"])
    assert values["m/req"] == IPv4Address("192.0.2.1")
    assert "vxlan/listen_ip" not in values  # owned and validated by another layer
    with pytest.raises(PropertyError, match="vxlan/listen_ip: unknown property"):
        resolve(SPECS, {"m/req": "192.0.2.1", "vxlan/listen_ip": "x"})  # not passed as known


def test_resolve_unset_required():
    with pytest.raises(PropertyError) as info:
        resolve(SPECS, {"m/port": "4789"})
    assert str(info.value) == "property m/req: unset required property" and info.value.name == "m/req"


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


@pytest.mark.parametrize("raw,value", [("0.5", 0.5), ("2", 2.0), (3, 3.0), (" 0 ", 0.0), (0.25, 0.25)])
def test_seconds_take_fractions(raw, value):
    assert spec(PropType.SECONDS, maximum=3600).parse(raw) == value


@pytest.mark.parametrize("raw,message", [
    ("x", "'x' is not a valid seconds (expected a number of seconds, fractions allowed)"),
    ("-1", "-1 is negative"), ("3600.5", "3600.5 is above the maximum 3600"), ("nan", "expected a finite"),
    (True, "a boolean is not a number")])
def test_seconds_refused_in_words(raw, message):
    with pytest.raises(PropertyError, match="^property test/p: ") as info:
        spec(PropType.SECONDS, maximum=3600).parse(raw)
    assert message in str(info.value) and "literal" not in str(info.value)


def test_a_whole_number_is_asked_for_in_words():
    with pytest.raises(PropertyError) as info:
        spec(PropType.UINT).parse("0.5")
    assert str(info.value) == "property test/p: '0.5' is not a valid uint (expected a whole number)"


def test_values_are_shown_as_the_docs_write_them():
    b = spec(PropType.BOOL, default=False)
    assert (b.show(False), b.show(True), b.show(None), b.possible()) == ("false", "true", "--", "true,false")
    assert spec(PropType.SECONDS).show(0.5) == "0.5" and spec(PropType.SECONDS).show(1.0) == "1"
    assert spec(PropType.SECONDS, maximum=3600).possible() == "0-3600"
    assert spec(PropType.STRING, secret=True).show("hunter2") == "********"
