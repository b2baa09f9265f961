"""varpd.backend.properties: each type, bounds and choices, resolve(), name checks."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from varpd.backend.errors import PropertyError
from varpd.backend.properties import PropertySpec, PropType, Protection, resolve


def spec(t: PropType, **kw) -> PropertySpec:
    return PropertySpec("m/p", t, **kw)


@pytest.mark.parametrize("raw, want", [("42", 42), ("-7", -7), ("0x10", 16), ("0X1f", 31), (" 5 ", 5), (9, 9),
                                       ("0o17", 15), ("0b101", 5)])
def test_int(raw, want):
    assert spec(PropType.INT).parse(raw) == want


@pytest.mark.parametrize("raw", ["x", "1.5", "", True, None])
def test_int_refuses(raw):
    with pytest.raises(PropertyError) as info:
        spec(PropType.INT).parse(raw)
    assert info.value.name == "m/p"
    assert str(info.value).startswith(f"property m/p: {raw!r} is not a valid int")


def test_uint():
    assert spec(PropType.UINT).parse("0x10") == 16
    assert spec(PropType.UINT).parse("0") == 0
    with pytest.raises(PropertyError, match="^property m/p: -1 is negative$"):
        spec(PropType.UINT).parse("-1")


@pytest.mark.parametrize("raw, want", [("192.0.2.1", IPv4Address("192.0.2.1")), ("2001:db8::1", IPv6Address("2001:db8::1")),
                                       (" 10.0.0.1 ", IPv4Address("10.0.0.1"))])
def test_ip(raw, want):
    assert spec(PropType.IP).parse(raw) == want


def test_ip_refuses_garbage():
    with pytest.raises(PropertyError, match="property m/p: '300.1.1.1' is not a valid ip"):
        spec(PropType.IP).parse("300.1.1.1")


def test_string_length_in_bytes():
    s = spec(PropType.STRING)
    assert s.parse("a" * 256) == "a" * 256
    with pytest.raises(PropertyError, match="longer than 256 bytes"):
        s.parse("a" * 257)
    with pytest.raises(PropertyError, match="longer than 256 bytes"):
        s.parse("é" * 129)  # 129 characters, 258 bytes
    assert s.parse("é" * 128) == "é" * 128


@pytest.mark.parametrize("raw, want", [("yes", True), ("no", False), ("true", True), ("false", False), ("1", True),
                                       ("0", False), ("TRUE", True), (" On ", True), ("off", False), (True, True),
                                       (False, False), (1, True), (0, False)])
def test_bool(raw, want):
    assert spec(PropType.BOOL).parse(raw) is want


@pytest.mark.parametrize("raw", ["maybe", "2", ""])
def test_bool_refuses(raw):
    with pytest.raises(PropertyError, match=f"property m/p: {raw!r} is not a valid bool"):
        spec(PropType.BOOL).parse(raw)


def test_minimum_and_maximum():
    s = spec(PropType.INT, minimum=10, maximum=20)
    assert s.parse("10") == 10 and s.parse("20") == 20
    with pytest.raises(PropertyError, match="^property m/p: 9 is below the minimum 10$"):
        s.parse("9")
    with pytest.raises(PropertyError, match="^property m/p: 21 is above the maximum 20$"):
        s.parse("21")
    assert s.possible() == "10-20"
    assert spec(PropType.INT, maximum=5).possible() == "-5"
    assert spec(PropType.INT).possible() == "--"


def test_choices():
    s = spec(PropType.STRING, choices=("vxlan", "geneve"))
    assert s.parse("vxlan") == "vxlan"
    with pytest.raises(PropertyError, match="^property m/p: 'nvgre' is not one of vxlan, geneve$"):
        s.parse("nvgre")
    assert s.possible() == "vxlan,geneve"


SPECS = (
    PropertySpec("m/req", PropType.IP, Protection.REQUIRED),
    PropertySpec("m/port", PropType.UINT, default=4789, minimum=1, maximum=65535),
    PropertySpec("m/flag", PropType.BOOL, default="yes"),
    PropertySpec("m/opt", PropType.STRING),
)


def test_resolve_applies_defaults_parsed():
    values = resolve(SPECS, {"m/req": "192.0.2.1"})
    assert values == {"m/req": IPv4Address("192.0.2.1"), "m/port": 4789, "m/flag": True}
    assert "m/opt" not in values  # no default, not given


def test_resolve_given_values_override_defaults():
    assert resolve(SPECS, {"m/req": "::1", "m/port": "0x1000", "m/flag": "no"})["m/port"] == 4096


def test_resolve_unknown_property():
    with pytest.raises(PropertyError) as info:
        resolve(SPECS, {"m/req": "192.0.2.1", "m/typo": "1"})
    assert str(info.value) == "property m/typo: unknown property" and info.value.name == "m/typo"


def test_resolve_unset_required():
    with pytest.raises(PropertyError) as info:
        resolve(SPECS, {"m/port": "1"})
    assert str(info.value) == "property m/req: unset required property" and info.value.name == "m/req"


def test_resolve_range_error_names_property():
    with pytest.raises(PropertyError, match="^property m/port: 70000 is above the maximum 65535$"):
        resolve(SPECS, {"m/req": "192.0.2.1", "m/port": "70000"})


def test_resolve_known_foreign_names_pass_through_unvalidated():
    values = resolve(SPECS, {"m/req": "192.0.2.1", "vxlan/listen_ip": "not-an-ip"}, known=["vxlan/listen_ip"])
    assert values["m/req"] == IPv4Address("192.0.2.1")
    assert "vxlan/listen_ip" not in values  # owned and validated by another layer
    with pytest.raises(PropertyError, match="vxlan/listen_ip: unknown property"):
        resolve(SPECS, {"m/req": "192.0.2.1", "vxlan/listen_ip": "x"})


@pytest.mark.parametrize("name", ["noslash", "/short", "module/", "", "m/" + "x" * 63])
def test_bad_names_rejected_at_definition(name):
    with pytest.raises(ValueError, match="is not <module>/<name> of at most 64 bytes"):
        PropertySpec(name, PropType.STRING)


def test_longest_name_accepted_and_protection():
    s = PropertySpec("m/" + "x" * 62, PropType.STRING, Protection.REQUIRED)
    assert s.required and not spec(PropType.INT).required
    assert Protection.READ.value == "r-" and Protection.WRITE.value == "rw" and Protection.REQUIRED.value == "rw*"
