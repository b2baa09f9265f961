"""hosts.json (overlay_files(5)): the seed file loads; every error is one line with file:line, MAC and field."""

from __future__ import annotations

import json
import time
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from varpd.backend.errors import ConfigError
from varpd.config.hosts import HostRecordModel, load_hosts, parse_hosts
from varpd.model import Destination, MappingRecord

SEED_FILE = Path(__file__).resolve().parents[3] / "configs" / "hosts.json"  # the one the repository ships
M1 = "de:ad:be:ef:00:01"

# The illumos preview's /var/tmp/hosts.json, with its outer braces and addresses restored.
SEED = """{
        "de:ad:be:ef:00:00": {
                "arp": "10.55.55.2",
                "ip": "192.0.2.1",
                "ndp": "fe80::3",
                "port": 4789
        }, "de:ad:be:ef:00:01": {
                "arp": "10.55.55.3",
                "dhcp-proxy": "de:ad:be:ef:00:00",
                "ip": "192.0.2.2",
                "ndp": "fe80::4",
                "port": 4789
        }, "de:ad:be:ef:00:02": {
                "arp": "10.55.55.4",
                "ip": "192.0.2.3",
                "ndp": "fe80::5",
                "port": 4789
        }
}
"""
# line numbers in SEED
L_MAC0, L_MAC1, L_MAC2 = 2, 7, 13
L_MAC1_IP, L_MAC1_PORT, L_MAC1_ARP, L_MAC1_NDP = 10, 12, 8, 11


def err(text: str, source: str = "hosts.json") -> str:
    with pytest.raises(ConfigError) as info:
        parse_hosts(text, source)
    msg = str(info.value)
    assert "\n" not in msg, "an error must be one line"
    return msg


def test_seed_loads():
    m = parse_hosts(SEED, "hosts.json")
    assert len(m) == 3
    r1 = m.by_mac["de:ad:be:ef:00:01"]
    assert r1 == MappingRecord("de:ad:be:ef:00:01", Destination(IPv4Address("192.0.2.2"), 4789),
                               IPv4Address("10.55.55.3"), IPv6Address("fe80::4"), "de:ad:be:ef:00:00")
    assert m.by_ip[IPv4Address("10.55.55.4")].mac == "de:ad:be:ef:00:02"
    assert m.by_ip[IPv6Address("fe80::3")].mac == "de:ad:be:ef:00:00"
    assert m.by_mac["de:ad:be:ef:00:00"].dhcp_proxy is None
    assert len(m.by_ip) == 6


def test_shipped_seed_file_loads():
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


def test_load_hosts_from_file(tmp_path):
    p = tmp_path / "hosts.json"
    p.write_text(SEED)
    assert len(load_hosts(p)) == 3
    with pytest.raises(ConfigError, match=r"nope.json: cannot read: No such file"):
        load_hosts(tmp_path / "nope.json")
    p.write_text('{\n"' + M1 + '": {\n"ip": "192.0.2.1",\n"port": 0\n}\n}\n')
    with pytest.raises(ConfigError, match=rf"^{p}:4: {M1}: field 'port': 0 is below 1$"):  # the full path
        load_hosts(p)
    p.write_bytes(b'{"\xff": 1}')
    with pytest.raises(ConfigError, match=r"hosts.json: not UTF-8 text \(byte 2\)"):
        load_hosts(p)


def test_the_seed_as_printed_without_braces_is_refused():
    body = SEED.strip()[1:-1]
    assert "invalid JSON" in err(body)


def test_empty_strings_mean_absent_and_ipv6_underlay_works():
    m = parse_hosts('{"de:ad:be:ef:00:07": {"ip": "2001:db8::7", "port": 4789, "arp": "", "ndp": "", '
                    '"dhcp-proxy": ""}}')
    rec = m.by_mac["de:ad:be:ef:00:07"]
    assert rec.dest == Destination(IPv6Address("2001:db8::7"), 4789)
    assert (rec.arp, rec.ndp, rec.dhcp_proxy) == (None, None, None)
    assert str(rec.dest) == "[2001:db8::7]:4789"
    assert len(m.by_ip) == 0


def test_mac_keys_and_proxy_are_normalised():
    m = parse_hosts('{"DE-AD-BE-EF-00-0A": {"ip": "192.0.2.9", "port": 4789, "dhcp-proxy": "DE:AD:BE:EF:00:0B"}}')
    assert list(m.by_mac) == ["de:ad:be:ef:00:0a"]
    assert m.by_mac["de:ad:be:ef:00:0a"].dhcp_proxy == "de:ad:be:ef:00:0b"


def test_empty_object_is_an_empty_mapping():
    assert len(parse_hosts("{}")) == 0


# -- errors, with their line numbers --------------------------------------------------------

def test_port_above_65535():
    bad = SEED.replace('"port": 4789\n        }, "de:ad:be:ef:00:02"', '"port": 70000\n        }, "de:ad:be:ef:00:02"')
    assert err(bad) == f"hosts.json:{L_MAC1_PORT}: de:ad:be:ef:00:01: field 'port': 70000 is above 65535"


@pytest.mark.parametrize("value,reason", [
    ("0", "0 is below 1"),
    ("-1", "-1 is below 1"),
    ("65536", "65536 is above 65535"),
    ('"4789"', "expected an integer, got a string '4789'"),
    ("true", "expected an integer, got a boolean True"),
    ("4789.5", "expected an integer, got a number 4789.5"),
    ("4789.0", "expected an integer, got a number 4789.0"),  # a whole float is still not an integer
    ("null", "expected an integer, got null None"),
])
def test_bad_ports(value, reason):
    text = '{\n"de:ad:be:ef:00:01": {\n"ip": "192.0.2.1",\n"port": %s\n}\n}' % value
    assert err(text) == f"hosts.json:4: de:ad:be:ef:00:01: field 'port': {reason}"


@pytest.mark.parametrize("port", [1, 65535])
def test_port_bounds_accepted(port):
    assert parse_hosts(json.dumps({M1: {"ip": "192.0.2.1", "port": port}})).by_mac[M1].dest.port == port


def test_bad_mac_key():
    bad = SEED.replace('"de:ad:be:ef:00:01"', '"zz:zz"')
    assert err(bad) == f"hosts.json:{L_MAC1}: 'zz:zz' is not a MAC address"


def test_invalid_json_has_line_and_column():
    bad = SEED.replace('"ip": "192.0.2.2",', '"ip": "192.0.2.2"')
    msg = err(bad)
    assert msg == f"hosts.json:{L_MAC1_IP + 1}:17: invalid JSON: Expecting ',' delimiter"
    assert err("") == "hosts.json:1:1: invalid JSON: Expecting value"  # an empty file


def test_truncated_file():
    assert err(SEED[: len(SEED) // 2]).startswith("hosts.json:")


def test_missing_required_field_names_the_key_line():
    bad = SEED.replace('"ip": "192.0.2.3",\n', "")
    assert err(bad) == f"hosts.json:{L_MAC2}: de:ad:be:ef:00:02: missing required field 'ip'"
    bad = SEED.replace('"ndp": "fe80::4",\n                "port": 4789', '"ndp": "fe80::4"')
    assert err(bad) == f"hosts.json:{L_MAC1}: de:ad:be:ef:00:01: missing required field 'port'"


def test_duplicate_mac_names_both_lines():
    bad = SEED.replace('"de:ad:be:ef:00:02"', '"de:ad:be:ef:00:00"')
    assert err(bad) == f"hosts.json: duplicate MAC de:ad:be:ef:00:00 (lines {L_MAC0} and {L_MAC2})"


@pytest.mark.parametrize("other", ["DE-AD-BE-EF-00-01", "de-ad-be-ef-00-01", "DE:AD:BE:EF:00:01", "De:aD:be:EF:00:01"])
def test_duplicate_mac_in_another_spelling(other):
    bad = SEED.replace('"de:ad:be:ef:00:02"', f'"{other}"')
    assert err(bad) == f"hosts.json: duplicate MAC de:ad:be:ef:00:01 (lines {L_MAC1} and {L_MAC2})"


def test_duplicate_field_in_one_record():
    bad = SEED.replace('"ip": "192.0.2.2",', '"ip": "192.0.2.2", "ip": "192.0.2.9",')
    assert err(bad) == (f"hosts.json:{L_MAC1_IP}: de:ad:be:ef:00:01: duplicate field 'ip' "
                        f"(lines {L_MAC1_IP} and {L_MAC1_IP})")
    # on two lines: the error is on the second one
    assert err('{\n"' + M1 + '": {\n"ip": "192.0.2.1",\n"port": 1,\n"port": 2\n}\n}\n') == \
        f"hosts.json:5: {M1}: duplicate field 'port' (lines 4 and 5)"


def test_same_arp_ip_claimed_twice_names_both_macs():
    bad = SEED.replace('"arp": "10.55.55.4"', '"arp": "10.55.55.3"')
    msg = err(bad)
    assert msg == ("hosts.json:14: de:ad:be:ef:00:02: field 'arp': 10.55.55.3 is already claimed by "
                   f"de:ad:be:ef:00:01 (line {L_MAC1_ARP})")


@pytest.mark.parametrize("spelling", ["fe80::3", "FE80:0::3"])
def test_same_ndp_ip_claimed_twice_names_both_macs(spelling):
    """Also when the second claim spells the address differently."""
    bad = SEED.replace('"ndp": "fe80::4"', f'"ndp": "{spelling}"')
    msg = err(bad)
    assert msg == (f"hosts.json:{L_MAC1_NDP}: de:ad:be:ef:00:01: field 'ndp': fe80::3 is already claimed by "
                   "de:ad:be:ef:00:00 (line 5)")


@pytest.mark.parametrize("text,kind", [("[]", "a list"), ('"x"', "a string"), ("null", "null"), ("3", "a number")])
def test_top_level_must_be_an_object(text, kind):
    assert err(text) == f"hosts.json: the top level must be an object keyed by MAC address, not {kind}"


@pytest.mark.parametrize("value,kind", [("[1, 2]", "a list"), ("5", "a number"), ('"192.0.2.1"', "a string"),
                                        ("null", "null"), ("true", "a boolean")])
def test_record_must_be_an_object(value, kind):
    assert err('{\n "de:ad:be:ef:00:01": ' + value + '\n}') == \
        f"hosts.json:2: de:ad:be:ef:00:01: the value must be an object with 'ip' and 'port', not {kind}"


def test_reserved_keys_are_refused():
    bad = SEED.replace('"port": 4789\n        }, "de:ad:be:ef:00:02"', '"port": 4789, "vlan": 5\n        }, "de:ad:be:ef:00:02"')
    assert err(bad) == (f"hosts.json:{L_MAC1_PORT}: de:ad:be:ef:00:01: unknown field 'vlan' "
                        "(reserved; known fields: ip, port, arp, ndp, dhcp-proxy)")


@pytest.mark.parametrize("ip,reason", [
    ("::ffff:192.0.2.1", "::ffff:192.0.2.1 is IPv4-mapped: write the IPv4 address 192.0.2.1"),
    ("224.0.0.1", "224.0.0.1 is a multicast address, not a VTEP"),
    ("ff02::1", "ff02::1 is a multicast address, not a VTEP"),
    ("0.0.0.0", "0.0.0.0 is the unspecified address, not a VTEP"),
    ("::", ":: is the unspecified address, not a VTEP"),
    ("not-an-ip", "'not-an-ip' is not an IPv4 or IPv6 address"),
    ("", "empty: the underlay address is required"),
    ("192.0.2.01", "'192.0.2.01' is not an IPv4 or IPv6 address"),
    ("192.0.2.256", "'192.0.2.256' is not an IPv4 or IPv6 address"),
    ("fe80::1%eth0", "'fe80::1%eth0' is not an IPv4 or IPv6 address"),  # no scoped addresses
])
def test_bad_underlay_ip(ip, reason):
    bad = SEED.replace('"ip": "192.0.2.2"', f'"ip": "{ip}"')
    assert err(bad) == f"hosts.json:{L_MAC1_IP}: de:ad:be:ef:00:01: field 'ip': {reason}"


def test_underlay_ip_must_be_a_string():
    bad = SEED.replace('"ip": "192.0.2.2"', '"ip": 3221225986')
    assert err(bad) == f"hosts.json:{L_MAC1_IP}: de:ad:be:ef:00:01: field 'ip': expected an IP address string, " \
                       "got a number 3221225986"


@pytest.mark.parametrize("field,value,reason", [
    ("arp", '"fe80::9"', "'fe80::9' is not an IPv4 address"),
    ("arp", "0", "expected an IPv4 address string, got a number 0"),  # a falsy non-string is not "absent"
    ("arp", "false", "expected an IPv4 address string, got a boolean False"),
    ("arp", "[]", "expected an IPv4 address string, got a list []"),
    ("arp", "{}", "expected an IPv4 address string, got an object {}"),
    ("ndp", '"10.0.0.1"', "'10.0.0.1' is not an IPv6 address"),
    ("ndp", "false", "expected an IPv6 address string, got a boolean False"),
    ("dhcp-proxy", '"nope"', "'nope' is not a MAC address"),
    ("dhcp-proxy", "7", "expected a MAC address string, got a number 7"),
])
def test_bad_optional_fields(field, value, reason):
    text = '{\n"de:ad:be:ef:00:01": {\n"ip": "192.0.2.1",\n"port": 4789,\n"%s": %s\n}\n}' % (field, value)
    assert err(text) == f"hosts.json:5: de:ad:be:ef:00:01: field '{field}': {reason}"


def test_source_defaults_to_string():
    assert err("[", source="<string>").startswith("<string>:1:2: invalid JSON")


def test_model_directly():
    rec = HostRecordModel.model_validate({"ip": "192.0.2.1", "port": 4789, "dhcp-proxy": "DE:AD:BE:EF:00:00"})
    assert rec.dhcp_proxy == "de:ad:be:ef:00:00"
    assert rec.to_record("de:ad:be:ef:00:05").dest == Destination(IPv4Address("192.0.2.1"), 4789)
    assert HostRecordModel(ip="192.0.2.1", port=1, dhcp_proxy="de:ad:be:ef:00:00").dhcp_proxy  # by field name too


def _big(n: int) -> str:
    d = {}
    for i in range(n):
        d["de:ad:%02x:%02x:%02x:%02x" % (i >> 24 & 255, i >> 16 & 255, i >> 8 & 255, i & 255)] = {
            "arp": "10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255),
            "ip": "192.0.2.%d" % (i % 250 + 1),
            "ndp": "fd00::%x:%x" % (i >> 16, i & 0xFFFF),
            "port": 4789,
        }
    return json.dumps(d, indent=8)


def test_100k_records(capsys):
    text = _big(100_000)
    t0 = time.perf_counter()
    m = parse_hosts(text, "big.json")
    took = time.perf_counter() - t0
    assert len(m) == 100_000 and len(m.by_ip) == 200_000
    assert m.by_mac["de:ad:00:01:86:9f"].arp == IPv4Address("10.1.134.159")  # the last one, intact
    with capsys.disabled():
        print(f"\n[hosts] 100k records ({len(text) / 1e6:.1f} MB) parsed in {took:.3f} s")


def test_error_deep_in_a_big_file_has_its_line():
    text = _big(20_000)
    lines = text.splitlines()
    target = next(i for i, line in enumerate(lines) if '"de:ad:00:00:4e:1f"' in line)  # record 19999
    lines[target + 4] = lines[target + 4].replace("4789", "0")  # its port line
    msg = err("\n".join(lines))
    assert msg == f"hosts.json:{target + 5}: de:ad:00:00:4e:1f: field 'port': 0 is below 1"


# -- error-path crashes (bugs) and robustness -------------------------------------------------

def test_huge_integer_is_a_config_error():
    err('{\n"' + M1 + '": {\n"ip": "192.0.2.1",\n"port": ' + "1" * 5000 + "\n}\n}\n")


def test_deep_nesting_is_a_config_error():
    err("[" * 100_000)


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


# -- addresses that must never be programmed (issue #12, items 8-10) --------------------------

@pytest.mark.parametrize("mac,reason", [
    ("00:00:00:00:00:00", "00:00:00:00:00:00 is the all-zero MAC (the VXLAN default entry), not a VNIC"),
    ("ff:ff:ff:ff:ff:ff", "ff:ff:ff:ff:ff:ff is the broadcast MAC, not a VNIC"),
    ("01:00:5E:00:00:01", "01:00:5e:00:00:01 is a multicast MAC, not a VNIC"),
    ("33-33-00-00-00-01", "33:33:00:00:00:01 is a multicast MAC, not a VNIC"),
])
def test_non_unicast_mac_keys_are_refused(mac, reason):
    bad = SEED.replace('"de:ad:be:ef:00:01"', f'"{mac}"')
    assert err(bad) == f"hosts.json:{L_MAC1}: {reason}"


def test_non_unicast_dhcp_proxy_is_refused():
    bad = SEED.replace('"dhcp-proxy": "de:ad:be:ef:00:00"', '"dhcp-proxy": "ff:ff:ff:ff:ff:ff"')
    assert err(bad) == f"hosts.json:9: de:ad:be:ef:00:01: field 'dhcp-proxy': " \
                       "ff:ff:ff:ff:ff:ff is the broadcast MAC, not a VNIC"


@pytest.mark.parametrize("ip,reason", [
    ("127.0.0.1", "127.0.0.1 is a loopback address, not a VTEP"),
    ("::1", "::1 is a loopback address, not a VTEP"),
    ("255.255.255.255", "255.255.255.255 is the broadcast address, not a VTEP"),
    ("::ffff:127.0.0.1", "::ffff:127.0.0.1 is IPv4-mapped: write the IPv4 address 127.0.0.1"),
])
def test_vtep_loopback_and_broadcast_are_refused(ip, reason):
    bad = SEED.replace('"ip": "192.0.2.2"', f'"ip": "{ip}"')
    assert err(bad) == f"hosts.json:{L_MAC1_IP}: de:ad:be:ef:00:01: field 'ip': {reason}"


@pytest.mark.parametrize("field,value,reason", [
    ("arp", "224.0.0.1", "224.0.0.1 is a multicast address, not a VNIC's address"),
    ("arp", "255.255.255.255", "255.255.255.255 is the broadcast address, not a VNIC's address"),
    ("arp", "0.0.0.0", "0.0.0.0 is the unspecified address, not a VNIC's address"),
    ("arp", "127.0.0.1", "127.0.0.1 is a loopback address, not a VNIC's address"),
    ("ndp", "ff02::1", "ff02::1 is a multicast address, not a VNIC's address"),
    ("ndp", "::", ":: is the unspecified address, not a VNIC's address"),
    ("ndp", "::1", "::1 is a loopback address, not a VNIC's address"),
])
def test_non_unicast_overlay_addresses_are_refused(field, value, reason):
    text = '{\n"de:ad:be:ef:00:01": {\n"ip": "192.0.2.1",\n"port": 4789,\n"%s": "%s"\n}\n}' % (field, value)
    assert err(text) == f"hosts.json:5: de:ad:be:ef:00:01: field '{field}': {reason}"


def test_link_local_ndp_stays_valid():
    text = '{"de:ad:be:ef:00:01": {"ip": "192.0.2.1", "port": 4789, "ndp": "fe80::4", "arp": "169.254.0.9"}}'
    rec = parse_hosts(text).by_mac[M1]
    assert rec.ndp == IPv6Address("fe80::4") and rec.arp == IPv4Address("169.254.0.9")
