"""The files backend: loads hosts.json, follows changes on disk with exactly the delta, survives bad files."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from _waiting import LoopTicker, wait_until

from varpd.backend.conformance import CONTEXT, BackendConformance, ChangeRecorder, hosts_json
from varpd.backend.errors import ConfigError, PropertyError
from varpd.backend.properties import resolve
from varpd.model import Destination, Mapping, MappingRecord
from varpd_plugins.files import FilesBackend

SEED = {
    "de:ad:be:ef:00:00": {"arp": "10.55.55.2", "ip": "192.0.2.1", "ndp": "fe80::3", "port": 4789},
    "de:ad:be:ef:00:01": {"arp": "10.55.55.3", "dhcp-proxy": "de:ad:be:ef:00:00", "ip": "192.0.2.2",
                          "ndp": "fe80::4", "port": 4789},
    "de:ad:be:ef:00:02": {"arp": "10.55.55.4", "ip": "192.0.2.3", "ndp": "fe80::5", "port": 4789},
}
POLL = 0.02


def write(path: Path, data: dict | str) -> None:
    """Rewrite in place (same inode), as `cat > file` or a naive editor does."""
    text = data if isinstance(data, str) else json.dumps(data, indent=8)
    with open(path, "w") as f:
        f.write(text)


def rename_over(path: Path, data: dict | str) -> None:
    """Write a new file and rename it over (vim, sed -i, atomic writers): a new inode."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(data if isinstance(data, str) else json.dumps(data, indent=8))
    os.replace(tmp, path)


def make(path: Path | str, interval: float | None = POLL, watch: str = "poll", **given) -> FilesBackend:
    """A FilesBackend on `path` (`watch`: files/watch); `interval` overrides the poll period (None: keep
    files/reload_interval's).  tests/unit/plugins/test_files_inotify.py has inotify's own cases."""
    props = resolve(FilesBackend.properties, {"files/config": str(path), "files/watch": watch, **given})
    b = FilesBackend(CONTEXT, props)
    if interval is not None:
        b.interval = interval
    return b


@pytest.fixture
def hosts_file(tmp_path) -> Path:
    path = tmp_path / "hosts.json"
    write(path, SEED)
    return path


@pytest.fixture(params=["poll", "inotify"])
async def started(hosts_file, request):
    path = hosts_file
    b = make(path, watch=request.param)
    await b.start()
    rec = ChangeRecorder()
    statuses: list[str | None] = []
    b.add_listener(rec)
    b.add_status_listener(statuses.append)
    yield b, path, rec, statuses
    await b.stop()


# -- properties ----------------------------------------------------------------------------

def test_relative_path_is_refused():
    props = resolve(FilesBackend.properties, {"files/config": "hosts.json"})
    with pytest.raises(PropertyError, match=r"property files/config: 'hosts.json' is not an absolute path") as info:
        FilesBackend(CONTEXT, props)
    assert info.value.name == "files/config"


def test_config_is_required_and_interval_defaults_to_one_second():
    with pytest.raises(PropertyError, match="files/config: unset required property"):
        resolve(FilesBackend.properties, {})
    with pytest.raises(PropertyError, match="files/config: unset required property"):
        FilesBackend(CONTEXT, {})  # the constructor checks too, without resolve()
    props = resolve(FilesBackend.properties, {"files/config": "/x/hosts.json"})
    assert props["files/reload_interval"] == 1
    assert FilesBackend(CONTEXT, props).interval == 1
    with pytest.raises(PropertyError, match="files/reload_interval"):
        resolve(FilesBackend.properties, {"files/config": "/x", "files/reload_interval": "-1"})
    with pytest.raises(PropertyError, match="files/reload_interval: 3601 is above the maximum 3600"):
        resolve(FilesBackend.properties, {"files/config": "/x", "files/reload_interval": "3601"})


def test_class_shape():
    assert FilesBackend.name == "files" and FilesBackend.enumerable
    assert FilesBackend.mode.value == "dynamic"


# -- start ---------------------------------------------------------------------------------

async def test_start_loads_and_answers(started):
    b, _, _, _ = started
    assert await b.lookup("de:ad:be:ef:00:01") == Destination(IPv4Address("192.0.2.2"), 4789)
    assert await b.arp(IPv4Address("10.55.55.4")) == "de:ad:be:ef:00:02"
    assert await b.ndp(IPv6Address("fe80::3")) == "de:ad:be:ef:00:00"
    assert await b.dhcp_proxy("de:ad:be:ef:00:01") == "de:ad:be:ef:00:00"
    assert len(b.snapshot()) == 3 and b.degraded is None


async def test_bad_file_at_start_is_fatal(tmp_path):
    path = tmp_path / "hosts.json"
    write(path, '{"de:ad:be:ef:00:01": {"ip": "192.0.2.1"}}')
    with pytest.raises(ConfigError, match=r"hosts.json:1: de:ad:be:ef:00:01: missing required field 'port'"):
        await make(path).start()
    # the message names the full path and the line of the bad field
    write(path, '{\n"de:ad:be:ef:00:01": {"ip": "192.0.2.1", "port": 0}\n}')
    b = make(path)
    with pytest.raises(ConfigError, match=rf"^{path}:2: de:ad:be:ef:00:01: field 'port': 0 is below 1$"):
        await b.start()
    await b.stop()  # stopping after a failed start is harmless
    with pytest.raises(ConfigError, match="cannot read"):
        await make(tmp_path / "missing.json").start()


# -- following the file --------------------------------------------------------------------

def _edited() -> dict:
    data = json.loads(json.dumps(SEED))
    del data["de:ad:be:ef:00:02"]  # removed
    data["de:ad:be:ef:00:00"]["port"] = 4790  # changed port
    data["de:ad:be:ef:00:03"] = {"ip": "192.0.2.4", "port": 4789, "arp": "10.55.55.5"}  # added
    return data


def _check_delta(rec: ChangeRecorder) -> None:
    assert len(rec.changes) == 1, rec.changes
    change = rec.changes[0]
    assert {r.mac: r for r in change.upserted} == {
        "de:ad:be:ef:00:00": MappingRecord("de:ad:be:ef:00:00", Destination(IPv4Address("192.0.2.1"), 4790),
                                           IPv4Address("10.55.55.2"), IPv6Address("fe80::3")),
        "de:ad:be:ef:00:03": MappingRecord("de:ad:be:ef:00:03", Destination(IPv4Address("192.0.2.4"), 4789),
                                           IPv4Address("10.55.55.5")),
    }
    # the removed MAC comes with its old record, so its neighbour entries can be withdrawn
    assert change.removed == (MappingRecord("de:ad:be:ef:00:02", Destination(IPv4Address("192.0.2.3"), 4789),
                                            IPv4Address("10.55.55.4"), IPv6Address("fe80::5")),)
    assert not change.full_resync


@pytest.mark.parametrize("writer", [write, rename_over], ids=["rewrite", "rename-over"])
async def test_change_on_disk_emits_exactly_the_delta(started, writer):
    b, path, rec, statuses = started
    writer(path, _edited())
    await rec.wait(1, timeout=3)
    await asyncio.sleep(5 * POLL)  # no second (spurious) change follows
    _check_delta(rec)
    assert await b.lookup("de:ad:be:ef:00:02") is None
    assert await b.arp(IPv4Address("10.55.55.4")) is None
    assert await b.arp(IPv4Address("10.55.55.5")) == "de:ad:be:ef:00:03"  # the added record's IP is served
    assert await b.lookup("de:ad:be:ef:00:00") == Destination(IPv4Address("192.0.2.1"), 4790)
    assert statuses == []


async def test_same_size_same_second_rewrite_is_seen(started):
    """Port 4789 → 4790: same size, same inode, perhaps the same mtime tick: still seen."""
    b, path, rec, _ = started
    data = json.loads(json.dumps(SEED))
    data["de:ad:be:ef:00:01"]["port"] = 4790
    write(path, data)
    st = os.stat(path)
    await rec.wait(1, timeout=3)
    assert [r.mac for r in rec.changes[0].upserted] == ["de:ad:be:ef:00:01"]
    assert rec.changes[0].removed == ()
    assert st.st_size == len(json.dumps(SEED, indent=8))


async def test_rewrite_within_one_timestamp_tick_is_seen(started):
    """A coarse-timestamp filesystem can give a quick same-size rewrite the very same (inode, mtime, size):
    a file this fresh is re-read anyway ("racy git")."""
    b, path, rec, _ = started
    before = os.stat(path)
    data = json.loads(json.dumps(SEED))
    data["de:ad:be:ef:00:02"]["port"] = 4790
    write(path, data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the stamp is exactly what was read
    st = os.stat(path)
    assert (st.st_ino, st.st_mtime_ns, st.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    await rec.wait(1, timeout=3)
    assert [r.mac for r in rec.changes[0].upserted] == ["de:ad:be:ef:00:02"]


@pytest.mark.parametrize("touch", [lambda path: os.utime(path, ns=(1, 1)), lambda path: rename_over(path, SEED)],
                         ids=["touch", "rename-over-same-content"])
async def test_touch_without_change_emits_nothing(started, touch):
    """A new stamp (or a new inode) with the same content is re-read, but emits no change."""
    b, path, rec, _ = started
    touch(path)
    await wait_until(lambda: b.reloads >= 1, timeout=3, what="a reload")
    await asyncio.sleep(3 * POLL)
    assert rec.changes == []


async def test_broken_rewrite_keeps_mapping_and_degrades_then_fix_clears(started, caplog):
    b, path, rec, statuses = started
    old = b.mapping
    caplog.set_level(logging.INFO, logger="varpd_plugins.files")
    broken = json.loads(json.dumps(SEED))
    broken["de:ad:be:ef:00:01"]["port"] = 70000
    write(path, json.dumps(broken, indent=8))
    await wait_until(lambda: b.degraded is not None, timeout=3, what="DEGRADED")
    assert "de:ad:be:ef:00:01: field 'port': 70000 is above 65535" in b.degraded
    assert str(path) in b.degraded and "keeping the last good mapping" in b.degraded
    await asyncio.sleep(5 * POLL)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # one line, not one per poll
    assert "\n" not in errors[0].getMessage() and "70000" in errors[0].getMessage()
    assert rec.changes == []  # nothing was applied
    assert b.mapping is old
    assert await b.lookup("de:ad:be:ef:00:01") == Destination(IPv4Address("192.0.2.2"), 4789)
    assert len(b.snapshot()) == 3

    rename_over(path, _edited())  # the fix (with changes of its own)
    await wait_until(lambda: b.degraded is None, timeout=3, what="DEGRADED cleared")
    await rec.wait(1)
    _check_delta(rec)
    assert statuses[0] is not None and statuses[-1] is None and len(statuses) == 2


async def test_invalid_json_rewrite_degrades(started):
    b, path, _, _ = started
    write(path, '{"de:ad:be:ef:00:01": ')
    await wait_until(lambda: b.degraded is not None, timeout=3, what="DEGRADED")
    assert f"{path}:1:23: invalid JSON" in b.degraded  # file, line and column
    assert len(b.mapping) == 3


async def test_deleted_file_degrades_and_keeps_mapping(started):
    b, path, rec, statuses = started
    old = b.mapping
    path.unlink()
    await wait_until(lambda: b.degraded is not None, timeout=3, what="DEGRADED")
    assert str(path) in b.degraded
    assert "cannot read" in b.degraded and "keeping the last good mapping" in b.degraded
    assert b.mapping is old
    assert await b.lookup("de:ad:be:ef:00:00") == Destination(IPv4Address("192.0.2.1"), 4789)
    assert rec.changes == []
    write(path, SEED)  # back, unchanged: recovers without emitting anything
    await wait_until(lambda: b.degraded is None, timeout=3, what="DEGRADED cleared")
    await asyncio.sleep(3 * POLL)
    assert rec.changes == [] and statuses == [statuses[0], None]


async def test_explicit_reload(tmp_path):
    path = tmp_path / "hosts.json"
    write(path, SEED)
    b = make(path, interval=0)  # polling disabled
    await b.start()
    rec = ChangeRecorder()
    b.add_listener(rec)
    try:
        assert b._task is None
        write(path, _edited())
        await asyncio.sleep(3 * POLL)
        assert rec.changes == []  # no polling
        change = await b.reload()
        _check_delta(rec)
        assert change == rec.changes[0]
        write(path, "{")
        with pytest.raises(ConfigError, match="invalid JSON"):
            await b.reload()
        assert b.degraded is not None and len(b.snapshot()) == 3
        write(path, _edited())
        assert not await b.reload()  # the same content as before the breakage: empty change
        assert b.degraded is None
    finally:
        await b.stop()


async def test_reload_interval_property_zero_never_polls(hosts_file):
    b = make(hosts_file, interval=None, **{"files/reload_interval": "0"})
    assert b.interval == 0
    rec = ChangeRecorder()
    b.add_listener(rec)
    await b.start()
    try:
        n = len(rec.changes)  # listeners added before start see the initial load
        rename_over(hosts_file, _edited())
        await asyncio.sleep(0.3)
        assert len(rec.changes) == n
        assert await b.lookup("de:ad:be:ef:00:02") is not None
        assert b.reloads == 0
        assert b.changed()  # it can tell, it just does not look by itself
        await b.reload()
        assert await b.lookup("de:ad:be:ef:00:02") is None
    finally:
        await b.stop()


async def test_listener_added_before_start_sees_the_initial_load(hosts_file):
    b = make(hosts_file)
    rec = ChangeRecorder()
    b.add_listener(rec)
    await b.start()
    try:
        assert len(rec.changes) == 1
        assert {r.mac for r in rec.changes[0].upserted} == set(SEED)
    finally:
        await b.stop()


async def test_file_with_oversized_integer_degrades(hosts_file):
    """A 5000-digit integer (past Python's int-string limit) is a ConfigError, not a crash."""
    b = make(hosts_file, interval=0)
    await b.start()
    try:
        write(hosts_file, '{"de:ad:be:ef:00:01": {"ip": "192.0.2.1", "port": ' + "9" * 5000 + "}}")
        with pytest.raises(ConfigError):
            await b.reload()
        assert b.degraded is not None
    finally:
        await b.stop()


async def test_failed_explicit_reload_is_not_forgotten_by_the_poller(started):
    """reload() records the bad file's stamp; the poller must not report the file as fine afterwards."""
    b, path, rec, _ = started
    write(path, "[]")
    with pytest.raises(ConfigError, match="top level"):
        await b.reload()
    await asyncio.sleep(5 * POLL)
    assert b.degraded is not None and "top level" in b.degraded


async def test_stop_cancels_the_watcher(started):
    b, path, rec, _ = started
    task, subscription = b._task, b._subscription
    assert (task is None) != (subscription is None)  # polled or watched, never both
    await b.stop()
    assert (task is None or task.done()) and b._task is None and b._subscription is None
    write(path, _edited())
    await asyncio.sleep(5 * POLL)
    assert rec.changes == []


async def test_big_file_reload_runs_off_the_loop(tmp_path):
    """A 20k-record reload is parsed in a worker thread: the event loop keeps ticking."""
    data = {}
    for i in range(20_000):
        data["02:00:00:00:%02x:%02x" % (i >> 8, i & 255)] = {"ip": "192.0.2.%d" % (i % 200 + 1), "port": 4789,
                                                             "arp": "10.1.%d.%d" % (i >> 8, i & 255)}
    path = tmp_path / "hosts.json"
    write(path, data)
    b = make(path, interval=0)
    await b.start()
    async with LoopTicker(0.001) as ticker:
        data["02:00:00:00:00:00"]["port"] = 4790
        write(path, data)
        change = await b.reload()
    assert [r.mac for r in change.upserted] == ["02:00:00:00:00:00"] and change.removed == ()
    assert ticker.ticks > 3
    await b.stop()


# -- the shared conformance suite ----------------------------------------------------------

class TestFilesConformance(BackendConformance):
    """Updates delivered by the poller noticing an atomic rename-over."""

    change_timeout = 3.0

    async def make_backend(self, mapping: Mapping) -> FilesBackend:
        path = self.tmp_path / "hosts.json"
        path.write_text(json.dumps(hosts_json(mapping), indent=8))
        return make(path)

    async def update_backend(self, backend: FilesBackend, mapping: Mapping) -> None:
        rename_over(backend.path, hosts_json(mapping))


class TestFilesConformanceExplicitReload(BackendConformance):
    """Updates delivered by an explicit reload(), polling off (files/reload_interval 0)."""

    change_timeout = 3.0

    async def make_backend(self, mapping: Mapping) -> FilesBackend:
        path = self.tmp_path / "hosts.json"
        rename_over(path, hosts_json(mapping))
        return make(path, interval=None, **{"files/reload_interval": 0})

    async def update_backend(self, backend: FilesBackend, mapping: Mapping) -> None:
        rename_over(backend.path, hosts_json(mapping))
        await backend.reload()


async def test_a_big_file_is_parsed_apart_and_followed_alike(hosts_file, monkeypatch):
    """Above APART_SIZE the file is parsed by a child process (varpd.config.hosts_apart): the same
    answers, the same delta on a change (unchanged records kept as they were), and a bad file keeps
    the last good mapping with the same one-line error."""
    from varpd_plugins import files

    monkeypatch.setattr(files, "APART_SIZE", 0)
    b = make(hosts_file)
    await b.start()
    rec = ChangeRecorder()
    b.add_listener(rec)
    try:
        assert await b.dhcp_proxy("de:ad:be:ef:00:01") == "de:ad:be:ef:00:00"
        kept = b.snapshot().by_mac["de:ad:be:ef:00:01"]
        rename_over(hosts_file, _edited())
        await rec.wait(1, timeout=10)
        _check_delta(rec)
        assert b.snapshot().by_mac["de:ad:be:ef:00:01"] is kept
        write(hosts_file, '{"de:ad:be:ef:00:01": {"ip": "192.0.2.1", "port": 0}}')
        with pytest.raises(ConfigError, match=rf"^{hosts_file}:1: de:ad:be:ef:00:01: field 'port': 0 is below 1$"):
            await b.reload()
        assert b.degraded.endswith("keeping the last good mapping") and len(b.snapshot()) == 3
    finally:
        await b.stop()
