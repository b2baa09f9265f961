"""The etcd backend's pure parts: key layout, value validation, watch events → MappingChange."""
from __future__ import annotations

import ipaddress
import json
import random
from dataclasses import dataclass

import pytest

from varpd.config.hosts import parse_hosts
from varpd.backend.errors import ConfigError
from varpd.model import Mapping

from varpd_plugins import etcd_table
from varpd_plugins.etcd_keys import (DELETE, PUT, KeyError_, MappingState, WatchEvent, build_mapping, encode_value,
                                     key_for, parse_key, parse_value, vni_prefix)

P = "/varpd"
M1, M2, M3 = "de:ad:be:ef:00:00", "de:ad:be:ef:00:01", "de:ad:be:ef:00:02"


def val(ip="192.0.2.1", port=4789, **extra) -> str:
    return json.dumps({"ip": ip, "port": port, **extra})


def put(mac, value, rev=1, vni=23, prefix=P):
    return WatchEvent(PUT, f"{prefix}/{vni}/{mac}", value, rev)


def delete(mac, vni=23, prefix=P):
    return WatchEvent(DELETE, f"{prefix}/{vni}/{mac}")


# -- keys ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix,expected", [("/varpd", "/varpd/23/"), ("/varpd/", "/varpd/23/"),
                                             ("/", "/23/"), ("", "/23/"), ("/a/b", "/a/b/23/")])
def test_vni_prefix(prefix, expected):
    assert vni_prefix(prefix, 23) == expected


def test_key_for_is_canonical():
    assert key_for("/varpd/", 23, "DE-AD-BE-EF-00-01") == "/varpd/23/de:ad:be:ef:00:01"


@pytest.mark.parametrize("key,mac", [
    ("/varpd/23/de:ad:be:ef:00:01", M2),
    (b"/varpd/23/DE:AD:BE:EF:00:01", M2),
    ("/varpd/23/de-ad-be-ef-00-01", M2),
    ("/varpd/230/de:ad:be:ef:00:01", None),  # VNI 230 is not VNI 23
    ("/varpd/2/de:ad:be:ef:00:01", None),
    ("/other/23/de:ad:be:ef:00:01", None),
    ("/varpdx/23/de:ad:be:ef:00:01", None),
])
def test_parse_key(key, mac):
    assert parse_key(key, P, 23) == mac


@pytest.mark.parametrize("key,words", [
    ("/varpd/23/", "no MAC"),
    ("/varpd/23/zz:ad:be:ef:00:01", "is not a MAC address"),
    ("/varpd/23/de:ad:be:ef:00:01/extra", "extra path"),
])
def test_parse_key_refuses_bad_keys(key, words):
    with pytest.raises(KeyError_, match=words) as exc:
        parse_key(key, P, 23)
    assert key in str(exc.value)


# -- values: the same messages as hosts.json ----------------------------------------------------
BAD_VALUES = [
    ({"port": 4789}, "missing required field 'ip'"),
    ({"ip": "192.0.2.1", "port": 70000}, "field 'port'"),
    ({"ip": "192.0.2.1", "port": "4789"}, "field 'port'"),
    ({"ip": "224.0.0.1", "port": 4789}, "field 'ip'"),
    ({"ip": "192.0.2.1", "port": 4789, "arp": "fe80::1"}, "field 'arp'"),
    ({"ip": "192.0.2.1", "port": 4789, "ndp": "10.0.0.1"}, "field 'ndp'"),
    ({"ip": "192.0.2.1", "port": 4789, "dhcp-proxy": "nope"}, "field 'dhcp-proxy'"),
    ({"ip": "192.0.2.1", "port": 4789, "color": "red"}, "unknown field 'color'"),
]


@pytest.mark.parametrize("body,words", BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_bad_values_have_the_hosts_json_message(body, words):
    key = f"/varpd/23/{M2}"
    with pytest.raises(ValueError) as exc:
        parse_value(key, M2, json.dumps(body))
    msg = str(exc.value)
    assert key in msg and words in msg and len(msg.splitlines()) == 1
    # the same reason as the files backend gives for the same record
    with pytest.raises(ConfigError) as files_exc:
        parse_hosts(json.dumps({M2: body}), "hosts.json")
    assert msg == f"key {key}: " + str(files_exc.value).split(f"{M2}: ", 1)[1]


@pytest.mark.parametrize("raw,words", [(b"{", "invalid JSON"), (b"[1]", "must be an object"),
                                       (b"\xff", "not UTF-8"), (b"", "invalid JSON"),
                                       (b"[" * 5000, "invalid JSON: nested too deeply")],
                         ids=["unclosed", "list", "not-utf8", "empty", "nested-5000-deep"])
def test_unparseable_values(raw, words):
    with pytest.raises(ValueError, match=words):
        parse_value("/varpd/23/x", M1, raw)


def test_value_roundtrip():
    rec = parse_value("k", M1, val(arp="10.0.0.2", ndp="fe80::3", **{"dhcp-proxy": "DE:AD:BE:EF:00:09"}))
    assert rec.dhcp_proxy == "de:ad:be:ef:00:09" and rec.arp == ipaddress.ip_address("10.0.0.2")
    assert parse_value("k", M1, encode_value(rec)) == rec


# -- events → changes ---------------------------------------------------------------------------
def test_put_update_delete_emit_only_the_difference():
    st = MappingState(P, 23)
    change, problems = st.apply([put(M1, val(arp="10.0.0.2")), put(M2, val("192.0.2.2"))])
    assert {r.mac for r in change.upserted} == {M1, M2} and not change.removed and problems == []
    change, _ = st.apply([put(M1, val(arp="10.0.0.2"))])  # same value again: nothing to do
    assert not change
    change, _ = st.apply([put(M1, val("192.0.2.3", arp="10.0.0.2"))])
    assert [str(r.dest.ip) for r in change.upserted] == ["192.0.2.3"] and not change.removed
    change, _ = st.apply([delete(M2)])
    assert [r.mac for r in change.removed] == [M2] and not change.upserted
    assert st.mapping().by_ip[ipaddress.ip_address("10.0.0.2")].mac == M1


def test_other_vnis_and_prefixes_are_ignored():
    st = MappingState(P, 23)
    change, problems = st.apply([put(M1, val(), vni=24), put(M2, val(), prefix="/x"), put(M3, "{bad", vni=230)])
    assert not change and problems == [] and len(st) == 0


def test_bad_value_is_reported_once_and_the_rest_keeps_working():
    st = MappingState(P, 23)
    change, problems = st.apply([put(M1, val()), put(M2, val(port=0))])
    assert [r.mac for r in change.upserted] == [M1]
    assert len(problems) == 1 and f"/varpd/23/{M2}" in problems[0] and "'port'" in problems[0]
    # the same bad value seen again (e.g. a reload) is not new
    _, problems = st.apply([put(M2, val(port=0))])
    assert problems == []
    # a good record replaced by a bad one is gone (every host decides the same, restarted or not)
    change, problems = st.apply([put(M1, "nonsense")])
    assert [r.mac for r in change.removed] == [M1] and "invalid JSON" in problems[0]
    change, _ = st.apply([put(M1, val()), put(M2, val())])
    assert {r.mac for r in change.upserted} == {M1, M2} and st.problems == {}


def test_bad_key_reported():
    st = MappingState(P, 23)
    change, problems = st.apply([WatchEvent(PUT, "/varpd/23/nope", val(), 1)])
    assert not change and "'nope' is not a MAC address" in problems[0]
    st.apply([WatchEvent(DELETE, "/varpd/23/nope")])
    assert st.problems == {}


def test_ip_conflict_first_created_wins_and_loser_takes_over_when_it_goes():
    st = MappingState(P, 23)
    # events in either order give the same result: the lower create_revision wins
    for order in (1, -1):
        st = MappingState(P, 23)
        evs = [put(M1, val(arp="10.0.0.9"), rev=5), put(M2, val("192.0.2.2", arp="10.0.0.9"), rev=7)]
        change, problems = st.apply(evs[::order])
        assert set(st.by_mac) == {M1}, order
        assert "10.0.0.9 is already claimed by de:ad:be:ef:00:00" in problems[0]
    change, _ = st.apply([delete(M1)])
    assert [r.mac for r in change.removed] == [M1] and [r.mac for r in change.upserted] == [M2]
    assert st.mapping().by_ip[ipaddress.ip_address("10.0.0.9")].mac == M2 and st.problems == {}


def test_same_mac_under_two_spellings():
    st = MappingState(P, 23)
    change, problems = st.apply([put(M1, val(), rev=3), put(M1.upper(), val("192.0.2.2"), rev=4)])
    assert str(st.by_mac[M1].dest.ip) == "192.0.2.1" and "duplicate MAC" in problems[0]
    change, _ = st.apply([delete(M1)])
    assert str(st.by_mac[M1].dest.ip) == "192.0.2.2"
    assert change.upserted and not change.removed  # the MAC stays, only its destination changed


def test_build_mapping_equals_the_files_backend_for_the_same_records():
    hosts = {M1: {"ip": "192.0.2.1", "port": 4789, "arp": "10.55.55.2", "ndp": "fe80::3"},
             M2: {"ip": "192.0.2.2", "port": 4789, "arp": "10.55.55.3", "dhcp-proxy": M1}}
    state, problems = build_mapping(P, 23, [put(m, json.dumps(b), i) for i, (m, b) in enumerate(hosts.items())])
    assert problems == [] and state.mapping() == parse_hosts(json.dumps(hosts))


@pytest.mark.parametrize("loaded", [False, True], ids=["empty", "after-a-full-read"])
def test_incremental_changes_equal_the_diff_of_full_reads(loaded, monkeypatch):
    """Random puts/deletes (with conflicts and bad values): every change equals old.diff(new),
    the state equals a fresh build from the surviving keys, and every earlier snapshot is
    unchanged (copy-on-write tables, compacted every few changes here)."""
    monkeypatch.setattr(etcd_table, "MIN_DELTA", 3)
    rnd = random.Random(7)
    macs = [f"02:00:00:00:00:{i:02x}" for i in range(12)]
    ips = [f"10.0.0.{i}" for i in range(6)]
    st = MappingState(P, 23)
    store: dict[str, tuple[str, int]] = {}  # key → (value, create revision)
    rev = 0
    if loaded:  # a first read in key order (create revisions in any order), conflicts included
        for m in macs[:8]:
            rev += 1
            store[f"{P}/23/{m}"] = (json.dumps({"ip": "192.0.2.1", "port": 4789, "arp": rnd.choice(ips)}),
                                    rnd.randint(1, 50))
        st.load_page([_KV(k.encode(), v.encode(), c) for k, (v, c) in sorted(store.items())])
        rev = 50
    kept: list[tuple[Mapping, dict, dict]] = []
    for _ in range(400):
        batch = []
        for _ in range(rnd.randint(1, 4)):
            rev += 1
            m = rnd.choice(macs)
            key = f"{P}/23/{m.upper() if rnd.random() < 0.1 else m}"
            if rnd.random() < 0.3:
                store.pop(key, None)
                batch.append(WatchEvent(DELETE, key))
            else:
                body = {"ip": f"192.0.2.{rnd.randint(1, 3)}", "port": 4789 if rnd.random() > 0.05 else 0}
                if rnd.random() < 0.7:
                    body["arp"] = rnd.choice(ips)
                value = json.dumps(body)
                created = store[key][1] if key in store else rev
                store[key] = (value, created)
                batch.append(WatchEvent(PUT, key, value, created))
        before = st.mapping()
        change, _ = st.apply(batch)
        after = st.mapping()
        expected = before.diff(after)
        assert set(change.upserted) == set(expected.upserted) and set(change.removed) == set(expected.removed)
        fresh, _ = build_mapping(P, 23, [WatchEvent(PUT, k, v, c) for k, (v, c) in store.items()])
        assert fresh.mapping() == after
        assert after == Mapping.of(after.by_mac.values())  # by_ip consistent with by_mac
        kept.append((after, dict(after.by_mac), dict(after.by_ip)))
    for snap, by_mac, by_ip in kept:
        assert dict(snap.by_mac) == by_mac and dict(snap.by_ip) == by_ip and len(snap) == len(by_mac)


@dataclass
class _KV:  # what a RangeResponse's kvs hold
    key: bytes
    value: bytes
    create_revision: int


def test_a_first_read_keeps_no_claim_sets():
    """The bookkeeping of 2000 keys without conflicts: the mapping's own tables, two arrays of
    revisions, nothing per key besides (the last session measured ~1 KB a key of claim sets)."""
    st = MappingState(P, 23)
    kvs = [_KV(f"{P}/23/02:00:00:00:{i >> 8:02x}:{i & 0xff:02x}".encode(),
               val(arp=f"10.0.{i >> 8}.{i & 0xff}").encode(), 10 + i) for i in range(2000)]
    st.load_page(kvs)
    assert len(st) == 2000 and len(st._rev_macs) == 2000
    assert not (st.revs or st.losers or st.loser_claims or st.odd_keys or st.problems)
    assert st._rev_of("02:00:00:00:07:cf") == 10 + 1999


# -- MACs and addresses that must never be programmed (issue #12, items 8-10) ------------------
@pytest.mark.parametrize("mac,words", [
    ("00:00:00:00:00:00", "all-zero MAC (the VXLAN default entry)"),
    ("FF:FF:FF:FF:FF:FF", "broadcast MAC"),
    ("01:00:5e:00:00:01", "multicast MAC"),
])
def test_non_unicast_mac_keys_are_ignored_and_reported_once(mac, words):
    """One `etcdctl put /varpd/23/00:00:00:00:00:00 ...` must not install the VXLAN default entry."""
    st = MappingState(P, 23)
    change, problems = st.apply([put(mac, val("192.0.2.7")), put(M1, val())])
    assert [r.mac for r in change.upserted] == [M1]
    assert len(problems) == 1 and words in problems[0] and f"/varpd/23/{mac}" in problems[0]
    _, again = st.apply([put(mac, val("192.0.2.7"))])  # the same bad key again: not reported again
    assert again == [] and len(st) == 1


@pytest.mark.parametrize("body,words", [
    ({"ip": "127.0.0.1", "port": 4789}, "field 'ip': 127.0.0.1 is a loopback address"),
    ({"ip": "255.255.255.255", "port": 4789}, "field 'ip': 255.255.255.255 is the broadcast address"),
    ({"ip": "::ffff:192.0.2.1", "port": 4789}, "field 'ip': ::ffff:192.0.2.1 is IPv4-mapped"),
    ({"ip": "192.0.2.1", "port": 4789, "arp": "224.0.0.1"}, "field 'arp': 224.0.0.1 is a multicast address"),
    ({"ip": "192.0.2.1", "port": 4789, "ndp": "ff02::1"}, "field 'ndp': ff02::1 is a multicast address"),
    ({"ip": "192.0.2.1", "port": 4789, "dhcp-proxy": "01:00:5e:00:00:01"}, "field 'dhcp-proxy': 01:00:5e"),
])
def test_values_naming_unprogrammable_addresses_are_ignored(body, words):
    st = MappingState(P, 23)
    change, problems = st.apply([put(M2, json.dumps(body))])
    assert not change and len(problems) == 1 and words in problems[0]
