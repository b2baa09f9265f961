"""hosts.json (overlay_files(5)) → Mapping: the seed file, the format's corners, every error's exact line."""

from __future__ import annotations

import json
import time
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from varpd.backend.errors import ConfigError
from varpd.config.hosts import load_hosts, parse_hosts
from varpd.model import Destination

REPO = Path(__file__).resolve().parents[3]
SEED_FILE = REPO / "configs" / "hosts.json"
M1 = "de:ad:be:ef:00:01"


def err(text: str) -> str:
    """The one-line message parse_hosts gives for `text` (source name 'hosts.json')."""
    with pytest.raises(ConfigError) as info:
        parse_hosts(text, "hosts.json")
    msg = str(info.value)
    assert "\n" not in msg, "errors must be one line"
    return msg


def one(body_lines: str) -> str:
    """A file whose only record starts on line 2 and whose fields start on line 3, one per line."""
    return '{\n"' + M1 + '": {\n' + body_lines + "\n}\n}\n"


# -- good files ----------------------------------------------------------------------------

def test_seed_file_loads():
    m = load_hosts(SEED_FILE)
    assert len(m) == 3
    r0, r1, r2 = (m.by_mac[f"de:ad:be:ef:00:0{i}"] for i in range(3))
    assert r0.dest == Destination(IPv4Address("192.0.2.1"), 4789)
    assert r1.dest == Destination(IPv4Address("192.0.2.2"), 4789)
    assert r2.dest == Destination(IPv4Address("192.0.2.3"), 4789)
    assert (r0.arp, r1.arp, r2.arp) == (IPv4Address("10.55.55.2"), IPv4Address("10.55.55.3"), IPv4Address("10.55.55.4"))
    assert (r0.ndp, r1.ndp, r2.ndp) == (IPv6Address("fe80::3"), IPv6Address("fe80::4"), IPv6Address("fe80::5"))
    assert all(r.ndp.is_link_local for r in (r0, r1, r2))
    assert r1.dhcp_proxy == "de:ad:be:ef:00:00"
    assert r0.dhcp_proxy is None and r2.dhcp_proxy is None
    # both indexes of the Mapping
    assert m.by_ip[IPv4Address("10.55.55.3")] is r1
    assert m.by_ip[IPv6Address("fe80::5")] is r2
    assert len(m.by_ip) == 6


def test_ipv6_underlay():
    m = parse_hosts(json.dumps({M1: {"ip": "2001:db8::1", "port": 4789}}))
    assert m.by_mac[M1].dest == Destination(IPv6Address("2001:db8::1"), 4789)
    assert str(m.by_mac[M1].dest) == "[2001:db8::1]:4789"


def test_empty_arp_ndp_and_proxy_mean_absent():
    m = parse_hosts(json.dumps({M1: {"ip": "192.0.2.1", "port": 4789, "arp": "", "ndp": "", "dhcp-proxy": ""}}))
    rec = m.by_mac[M1]
    assert rec.arp is None and rec.ndp is None and rec.dhcp_proxy is None
    assert len(m.by_ip) == 0


def test_mac_spellings_are_normalised():
    m = parse_hosts(json.dumps({"DE-AD-BE-EF-00-01": {"ip": "192.0.2.1", "port": 1, "dhcp-proxy": "DE:AD:BE:EF:00:00"}}))
    assert list(m.by_mac) == [M1]
    assert m.by_mac[M1].dhcp_proxy == "de:ad:be:ef:00:00"


def test_empty_object_is_an_empty_mapping():
    assert len(parse_hosts("{}")) == 0


# -- errors, with their exact line and wording -----------------------------------------------

def test_invalid_json_has_line_and_column():
    assert err('{\n  "' + M1 + '": {"ip": "192.0.2.1" "port": 1}\n}') == \
        "hosts.json:2:43: invalid JSON: Expecting ',' delimiter"
    assert err("") == "hosts.json:1:1: invalid JSON: Expecting value"


@pytest.mark.parametrize("text, kind", [("[1]", "a list"), ('"x"', "a string"), ("5", "a number"), ("null", "null")])
def test_top_level_not_an_object(text, kind):
    assert err(text) == f"hosts.json: the top level must be an object keyed by MAC address, not {kind}"


def test_bad_mac_key():
    assert err('{\n"de:ad:be:ef:00:01": {"ip": "192.0.2.1", "port": 1},\n\n"zz": {"ip": "192.0.2.1", "port": 1}\n}') \
        == "hosts.json:4: 'zz' is not a MAC address"


def test_duplicate_mac_same_key():
    body = '{"ip": "192.0.2.1", "port": 1}'
    assert err('{\n"' + M1 + '": ' + body + ',\n"' + M1 + '": ' + body + "\n}") == \
        f"hosts.json: duplicate MAC {M1} (lines 2 and 3)"


@pytest.mark.parametrize("other", ["DE:AD:BE:EF:00:01", "de-ad-be-ef-00-01", "De:aD:be:EF:00:01"])
def test_duplicate_mac_two_spellings(other):
    body = '{"ip": "192.0.2.1", "port": 1}'
    assert err('{\n"' + M1 + '": ' + body + ',\n\n\n"' + other + '": ' + body + "\n}") == \
        f"hosts.json: duplicate MAC {M1} (lines 2 and 5)"


def test_duplicate_field_in_one_record():
    assert err(one('"ip": "192.0.2.1",\n"port": 1,\n"port": 2')) == \
        f"hosts.json:5: {M1}: duplicate field 'port' (lines 4 and 5)"


@pytest.mark.parametrize("value, kind", [("5", "a number"), ('"192.0.2.1"', "a string"), ("[]", "a list"),
                                         ("null", "null"), ("true", "a boolean")])
def test_value_not_an_object(value, kind):
    assert err('{\n\n"' + M1 + '": ' + value + "\n}") == \
        f"hosts.json:3: {M1}: the value must be an object with 'ip' and 'port', not {kind}"


def test_missing_ip():
    assert err(one('"port": 4789')) == f"hosts.json:2: {M1}: missing required field 'ip'"


def test_missing_port():
    assert err(one('"ip": "192.0.2.1"')) == f"hosts.json:2: {M1}: missing required field 'port'"


@pytest.mark.parametrize("port, reason", [
    ("0", "0 is below 1"),
    ("-1", "-1 is below 1"),
    ("70000", "70000 is above 65535"),
    ("65536", "65536 is above 65535"),
    ('"4789"', "expected an integer, got a string '4789'"),
    ("true", "expected an integer, got a boolean True"),
    ("4789.0", "expected an integer, got a number 4789.0"),
    ("null", "expected an integer, got null None"),
])
def test_bad_port(port, reason):
    assert err(one('"ip": "192.0.2.1",\n\n"port": ' + port)) == f"hosts.json:5: {M1}: field 'port': {reason}"


@pytest.mark.parametrize("port", [1, 65535])
def test_port_bounds_accepted(port):
    assert parse_hosts(json.dumps({M1: {"ip": "192.0.2.1", "port": port}})).by_mac[M1].dest.port == port


@pytest.mark.parametrize("ip, reason", [
    ("239.1.1.1", "239.1.1.1 is a multicast address, not a VTEP"),
    ("ff02::1", "ff02::1 is a multicast address, not a VTEP"),
    ("0.0.0.0", "0.0.0.0 is the unspecified address, not a VTEP"),
    ("::", ":: is the unspecified address, not a VTEP"),
    ("::ffff:192.0.2.1", "::ffff:192.0.2.1 is IPv4-mapped: write the IPv4 address 192.0.2.1"),
    ("banana", "'banana' is not an IPv4 or IPv6 address"),
    ("192.0.2.256", "'192.0.2.256' is not an IPv4 or IPv6 address"),
    ("fe80::1%eth0", "'fe80::1%eth0' is not an IPv4 or IPv6 address"),
    ("", "empty: the underlay address is required"),
])
def test_bad_underlay_ip(ip, reason):
    assert err(one('"port": 4789,\n"ip": ' + json.dumps(ip))) == f"hosts.json:4: {M1}: field 'ip': {reason}"


def test_underlay_ip_not_a_string():
    assert err(one('"ip": 5,\n"port": 1')) == \
        f"hosts.json:3: {M1}: field 'ip': expected an IP address string, got a number 5"


def test_arp_given_an_ipv6():
    assert err(one('"ip": "192.0.2.1",\n"port": 1,\n"arp": "fe80::1"')) == \
        f"hosts.json:5: {M1}: field 'arp': 'fe80::1' is not an IPv4 address"


def test_ndp_given_an_ipv4():
    assert err(one('"ip": "192.0.2.1",\n"port": 1,\n"ndp": "10.0.0.1"')) == \
        f"hosts.json:5: {M1}: field 'ndp': '10.0.0.1' is not an IPv6 address"


@pytest.mark.parametrize("value", ["0", "false", "[]", "{}"])
def test_falsy_non_string_arp_is_not_absent(value):
    assert f"hosts.json:5: {M1}: field 'arp': expected an IPv4 address string" in \
        err(one('"ip": "192.0.2.1",\n"port": 1,\n"arp": ' + value))


def test_bad_dhcp_proxy():
    assert err(one('"ip": "192.0.2.1",\n"port": 1,\n"dhcp-proxy": "nope"')) == \
        f"hosts.json:5: {M1}: field 'dhcp-proxy': 'nope' is not a MAC address"
    assert err(one('"ip": "192.0.2.1",\n"port": 1,\n"dhcp-proxy": 7')) == \
        f"hosts.json:5: {M1}: field 'dhcp-proxy': expected a MAC address string, got a number 7"


def test_unknown_field_is_reserved():
    assert err(one('"ip": "192.0.2.1",\n"port": 1,\n"vlan": 5')) == \
        f"hosts.json:5: {M1}: unknown field 'vlan' (reserved; known fields: ip, port, arp, ndp, dhcp-proxy)"


def test_two_macs_claim_one_arp():
    text = ('{\n"de:ad:be:ef:00:01": {"ip": "192.0.2.1", "port": 1, "arp": "10.0.0.1"},\n'
            '"de:ad:be:ef:00:02": {"ip": "192.0.2.1",\n"port": 1,\n"arp": "10.0.0.1"}\n}')
    assert err(text) == ("hosts.json:5: de:ad:be:ef:00:02: field 'arp': 10.0.0.1 is already claimed "
                         "by de:ad:be:ef:00:01 (line 2)")


def test_two_macs_claim_one_ndp_in_different_spellings():
    text = ('{\n"de:ad:be:ef:00:01": {"ip": "192.0.2.1", "port": 1,\n"ndp": "fe80::1"},\n'
            '"de:ad:be:ef:00:02": {"ip": "192.0.2.1",\n"port": 1,\n"ndp": "FE80:0::1"}\n}')
    assert err(text) == ("hosts.json:6: de:ad:be:ef:00:02: field 'ndp': fe80::1 is already claimed "
                         "by de:ad:be:ef:00:01 (line 3)")


def test_one_mac_may_hold_its_own_arp_and_ndp():
    m = parse_hosts(json.dumps({M1: {"ip": "192.0.2.1", "port": 1, "arp": "10.0.0.1", "ndp": "fe80::1"}}))
    assert len(m.by_ip) == 2


def test_load_hosts_names_the_file(tmp_path):
    p = tmp_path / "hosts.json"
    p.write_text(one('"ip": "192.0.2.1",\n"port": 0'))
    with pytest.raises(ConfigError, match=rf"^{p}:4: {M1}: field 'port': 0 is below 1$"):
        load_hosts(p)
    with pytest.raises(ConfigError, match=r"cannot read"):
        load_hosts(tmp_path / "missing.json")
    p.write_bytes(b'{"\xff": 1}')
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 2\)"):
        load_hosts(p)


# -- error-path crashes (bugs) -----------------------------------------------------------------

def test_huge_integer_is_a_config_error():
    err(one('"ip": "192.0.2.1",\n"port": ' + "1" * 5000))


def test_deep_nesting_is_a_config_error():
    err("[" * 100_000)


# -- robustness and size ---------------------------------------------------------------------

_FRAGMENTS = ['{', '}', '[', ']', ':', ',', '"', '\n', ' ', 'null', 'true', 'false', '0', '4789', '-1', '1e9',
              '"ip"', '"port"', '"arp"', '"ndp"', '"dhcp-proxy"', '"de:ad:be:ef:00:01"', '"DE-AD-BE-EF-00-01"',
              '"192.0.2.1"', '"fe80::1"', '"::ffff:1.2.3.4"', '"239.0.0.1"', '""', '"\\ud800"', '"\\u0000"']

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=20) | st.sampled_from(["192.0.2.1", "fe80::1", "de:ad:be:ef:00:01", "", "4789"]),
    lambda kids: st.lists(kids, max_size=4)
    | st.dictionaries(st.sampled_from(["ip", "port", "arp", "ndp", "dhcp-proxy", "x"]) | st.text(max_size=8),
                      kids, max_size=5),
    max_leaves=20,
)
_records = st.dictionaries(
    st.sampled_from(["de:ad:be:ef:00:01", "de:ad:be:ef:00:02", "DE:AD:BE:EF:00:01", "zz"]) | st.text(max_size=17),
    _json_values, max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join),
    st.text(max_size=80),
    _records.map(json.dumps),
    _json_values.map(json.dumps),
    st.tuples(_records.map(lambda r: json.dumps(r, indent=2)), st.integers(0, 200), st.integers(0, 5))
      .map(lambda t: t[0][:t[1]] + t[0][t[1] + t[2]:]),  # a truncated / holed valid file
))
def test_random_text_only_ever_raises_config_error(text):
    try:
        parse_hosts(text, "fuzz.json")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.json")
        assert "\n" not in str(exc)


def test_100k_records(tmp_path, capsys):
    n = 100_000
    recs = {}
    for i in range(n):
        b = i.to_bytes(4, "big")
        mac = "02:00:" + ":".join(f"{x:02x}" for x in b)
        recs[mac] = {"ip": f"192.0.{(i >> 8) & 0xff}.{(i & 0xff) or 1}", "port": 4789,
                     "arp": f"10.{b[1]}.{b[2]}.{b[3]}", "ndp": f"fd00::{i >> 16:x}:{i & 0xffff:x}"}
    p = tmp_path / "big.json"
    p.write_text(json.dumps(recs, indent=1))
    t0 = time.perf_counter()
    m = load_hosts(p)
    elapsed = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n[hosts.json] {n} records loaded in {elapsed:.3f}s")
    assert len(m) == n and len(m.by_ip) == 2 * n
    assert m.by_mac["02:00:00:01:86:9f"].arp == IPv4Address("10.1.134.159")
