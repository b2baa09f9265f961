"""Hostile hosts.json files (issue #12, items 5 and 6), each read by `load_hosts` in a child Python
capped at 1 GiB of address space: a FIFO, /dev/zero, a file over the size limit, a 20 MB string with
an error, a 5 MB `ip`.  Each must give a one-line ConfigError naming the file, quickly, in bounded
memory; today's main blocked forever, read until the OOM killer, or peaked at 2.4 GB."""
from __future__ import annotations

import json
import os

import pytest

from _memcap import run_capped

# the child: load_hosts(path, max_size) → {"error": str(ConfigError) | None, "peak_mb": max RSS in MB}
# peak from VmHWM, this process image's own high-water mark: ru_maxrss also keeps the RSS the child
# had before exec, a copy of the (large, late in a full run) pytest process it was forked from
LOAD = """
import json
from varpd.backend.errors import ConfigError
from varpd.config.hosts import load_hosts, MAX_SIZE
try:
    load_hosts({path!r}, {max_size} or MAX_SIZE)
    error = None
except ConfigError as exc:
    error = str(exc)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"error": error, "peak_mb": hwm // 1024}}))
"""


def load_capped(path, max_size: int = 0, timeout: float = 120.0) -> dict:
    return run_capped(LOAD.format(path=str(path), max_size=max_size), timeout=timeout)


def one_line(result: dict, path) -> str:
    msg = result["error"]
    assert msg is not None, "the file was accepted"
    assert "\n" not in msg and msg.startswith(f"{path}:"), msg
    return msg


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "hosts.json"
    os.mkfifo(fifo)
    assert "not a regular file but a FIFO, device or socket" in one_line(load_capped(fifo, timeout=30), fifo)


def test_dev_zero_is_refused_without_reading_it():
    assert "not a regular file" in one_line(load_capped("/dev/zero", timeout=30), "/dev/zero")


def test_a_directory_is_refused(tmp_path):
    assert "not a regular file but a directory" in one_line(load_capped(tmp_path), tmp_path)


def test_a_file_over_the_limit_is_refused_unread(tmp_path):
    big = tmp_path / "hosts.json"
    with open(big, "wb") as f:
        f.truncate(300 * 1024 * 1024)  # sparse: 300 MiB of NULs above the 256 MiB default
    result = load_capped(big)
    assert one_line(result, big).endswith("300 MiB is larger than the limit of 256 MiB")
    assert result["peak_mb"] < 200  # not read


def test_the_limit_is_configurable(tmp_path):
    path = tmp_path / "hosts.json"
    path.write_text('{"de:ad:be:ef:00:01": {"ip": "192.0.2.1", "port": 4789}}')
    assert load_capped(path, max_size=1024)["error"] is None
    assert one_line(load_capped(path, max_size=16), path).endswith("is larger than the limit of 16 bytes")


def test_a_20_mb_string_with_an_error_costs_memory_once(tmp_path, capsys):
    """The line scanner on the error path cost ~120 bytes per character: 2.4 GB for this file."""
    path = tmp_path / "hosts.json"
    body = {"ip": "192.0.2.1", "port": 4789, "x-note": "n" * (20 * 1000 * 1000)}
    path.write_text(json.dumps({"de:ad:be:ef:00:01": body}, indent=2))
    result = load_capped(path)
    msg = one_line(result, path)
    assert "unknown field 'x-note'" in msg and len(msg) < 300
    with capsys.disabled():
        print(f"\n[hosts] 20 MB string with an error: peak RSS {result['peak_mb']} MB")
    assert result["peak_mb"] < 400


@pytest.mark.parametrize("field", ["ip", "arp", "ndp", "dhcp-proxy"])
def test_a_5_mb_bad_value_is_quoted_by_a_bounded_prefix(tmp_path, field):
    path = tmp_path / "hosts.json"
    body = {"ip": "192.0.2.1", "port": 4789, field: "9" * (5 * 1000 * 1000)}
    path.write_text(json.dumps({"de:ad:be:ef:00:01": body}))
    msg = one_line(load_capped(path), path)
    assert f"field '{field}'" in msg and len(msg) < 300, msg[:400]


def test_a_5_mb_bad_key_is_quoted_by_a_bounded_prefix(tmp_path):
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps({"k" * (5 * 1000 * 1000): {"ip": "192.0.2.1", "port": 4789}}))
    msg = one_line(load_capped(path), path)
    assert "is not a MAC address" in msg and len(msg) < 300, msg[:400]


def test_an_error_deep_in_a_big_file_is_found_in_bounded_memory(tmp_path, capsys):
    """200k records and a duplicate field in the last: the scanner holds one key at a time."""
    path = tmp_path / "hosts.json"
    lines = ["{"]
    for i in range(200_000):
        lines.append(f'  "de:ad:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}": '
                     f'{{"ip": "192.0.2.{i % 250 + 1}", "port": 4789}},')
    lines.append('  "de:ad:ff:00:00:00": {"ip": "192.0.2.1", "port": 4789, "port": 4790}')
    lines.append("}")
    path.write_text("\n".join(lines))
    result = load_capped(path, timeout=120)
    msg = one_line(result, path)
    assert msg == f"{path}:200002: de:ad:ff:00:00:00: duplicate field 'port' (lines 200002 and 200002)"
    with capsys.disabled():
        print(f"\n[hosts] 200k records ({path.stat().st_size / 1e6:.1f} MB), error at the end: "
              f"peak RSS {result['peak_mb']} MB")
