"""A big hosts.json parsed in a child process: the same Mapping and the same one-line errors as in the daemon."""

from __future__ import annotations

import json
import os
import sys

import pytest

from varpd.backend.errors import ConfigError
from varpd.config import hosts_apart
from varpd.config.hosts import load_hosts
from varpd.config.hosts_apart import load_hosts_apart
from varpd.model.packed import PackError, pack, unpack

BIG = 1 << 20

# every shape a record takes: IPv4/IPv6 underlay, dhcp-proxy, arp or ndp alone, neither, an unusual spelling
RECORDS = {
    "de:ad:be:ef:00:01": {"ip": "192.0.2.2", "port": 4789, "arp": "10.55.55.3", "ndp": "fe80::4",
                          "dhcp-proxy": "DE-AD-BE-EF-00-02"},
    "DE:AD:BE:EF:00:02": {"ip": "2001:db8::2", "port": 4790, "ndp": "2001:db8:55::2"},
    "de:ad:be:ef:00:03": {"ip": "192.0.2.3", "port": 1, "arp": "10.55.55.4", "ndp": ""},
    "de:ad:be:ef:00:04": {"ip": "192.0.2.3", "port": 65535},
}


def _write(tmp_path, data) -> str:
    path = tmp_path / "hosts.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=4))
    return str(path)


def _same(a, b) -> None:
    assert list(a.by_mac.items()) == list(b.by_mac.items())  # records and the file's order
    assert a.by_ip.v4 == b.by_ip.v4 and a.by_ip.v6 == b.by_ip.v6


def test_the_child_gives_the_in_process_mapping_and_the_stamp_of_the_file(tmp_path):
    path = _write(tmp_path, RECORDS)
    stamp, got = load_hosts_apart(path, BIG)
    _same(got, load_hosts(path, BIG))
    st = os.stat(path)
    assert stamp == (st.st_ino, st.st_mtime_ns, st.st_size)
    assert got.by_mac["de:ad:be:ef:00:01"].dhcp_proxy == "de:ad:be:ef:00:02"


BAD = [  # a field (with its line), and a duplicate MAC in another spelling (two lines)
    '{"de:ad:be:ef:00:01": {"ip": "192.0.2.1", "port": 70000}}',
    '{\n"de:ad:be:ef:00:01": {"ip": "192.0.2.1", "port": 1},\n"DE-AD-BE-EF-00-01": {"ip": "192.0.2.1", "port": 1}\n}',
]


@pytest.mark.parametrize("text", BAD)
def test_a_refused_file_is_the_same_one_line_error(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as here:
        load_hosts(path, BIG)
    with pytest.raises(ConfigError) as apart:
        load_hosts_apart(path, BIG)
    assert str(apart.value) == str(here.value) and "\n" not in str(apart.value)
    assert str(apart.value).startswith(path)


def test_too_big_is_refused_by_the_child(tmp_path):
    path = _write(tmp_path, RECORDS)
    with pytest.raises(ConfigError, match=r"hosts.json: \d+ bytes is larger than the limit of 100 bytes$"):
        load_hosts_apart(path, 100)


def test_a_parser_that_dies_is_a_config_error_naming_the_file(tmp_path, monkeypatch):
    path = _write(tmp_path, RECORDS)
    monkeypatch.setattr(hosts_apart, "_command", lambda p, m: [
        sys.executable, "-c", ("import os, signal, sys; sys.stdout.buffer.write(b'VPM1'); sys.stdout.flush(); "
                               "os.kill(os.getpid(), signal.SIGKILL)")])
    with pytest.raises(ConfigError, match=rf"^{path}: the parser process failed \(killed by signal 9\)$"):
        load_hosts_apart(path, BIG)


def test_records_unchanged_since_the_previous_load_are_the_same_objects(tmp_path):
    path = _write(tmp_path, RECORDS)
    _, first = load_hosts_apart(path, BIG)
    changed = json.loads(json.dumps(RECORDS))
    changed["de:ad:be:ef:00:03"]["port"] = 2
    _write(tmp_path, changed)
    _, second = load_hosts_apart(path, BIG, first)
    for mac, rec in second.by_mac.items():
        assert (rec is first.by_mac[mac]) == (mac != "de:ad:be:ef:00:03")
    assert second.by_mac["de:ad:be:ef:00:03"].dest.port == 2
    assert second.by_ip.v4[first.by_mac["de:ad:be:ef:00:01"].arp_int] is first.by_mac["de:ad:be:ef:00:01"]


def test_pack_round_trip_and_framing(tmp_path):
    mapping = load_hosts(_write(tmp_path, RECORDS), BIG)
    data = pack(mapping, (1, 2, 3))
    stamp, back = unpack(data)
    assert stamp == (1, 2, 3)
    _same(back, mapping)
    for broken in (data[:-1], data[:10], b"XXXX" + data[4:]):
        with pytest.raises(PackError):
            unpack(broken)
    assert len(unpack(pack(load_hosts(_write(tmp_path, "{}"), BIG)))[1]) == 0
