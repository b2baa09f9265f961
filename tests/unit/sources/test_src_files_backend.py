"""FilesBackend: property checks, live reload (in place and rename-over) with exactly the delta, DEGRADED."""

from __future__ import annotations

import asyncio
import json
import os
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from varpd.backend.conformance import CONTEXT, ChangeRecorder
from varpd.backend.errors import ConfigError, PropertyError
from varpd.backend.properties import resolve
from varpd.model import Destination
from varpd_plugins.files import FilesBackend

SEED = {
    "de:ad:be:ef:00:00": {"arp": "10.55.55.2", "ip": "192.0.2.1", "ndp": "fe80::3", "port": 4789},
    "de:ad:be:ef:00:01": {"arp": "10.55.55.3", "dhcp-proxy": "de:ad:be:ef:00:00", "ip": "192.0.2.2",
                          "ndp": "fe80::4", "port": 4789},
    "de:ad:be:ef:00:02": {"arp": "10.55.55.4", "ip": "192.0.2.3", "ndp": "fe80::5", "port": 4789},
}
POLL = 0.02


def seed() -> dict:
    return json.loads(json.dumps(SEED))


def write_in_place(path: Path, data: dict | str) -> None:
    """Same inode: `cat > file`."""
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data, indent=4))


def rename_over(path: Path, data: dict | str) -> None:
    """A new inode renamed over the file: an atomic writer (vim, sed -i)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(data if isinstance(data, str) else json.dumps(data, indent=4))
    os.replace(tmp, path)


def backend(path: Path | str, interval: float | None = POLL, **extra) -> FilesBackend:
    given = {"files/config": str(path), **extra}
    b = FilesBackend(CONTEXT, resolve(FilesBackend.properties, given))
    if interval is not None:
        b.interval = interval
    return b


async def until(predicate, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
def hosts(tmp_path) -> Path:
    p = tmp_path / "hosts.json"
    write_in_place(p, SEED)
    return p


@pytest.fixture
async def running(hosts):
    b = backend(hosts)
    await b.start()
    yield b
    await b.stop()


# -- properties ----------------------------------------------------------------------------

def test_relative_path_is_a_property_error():
    with pytest.raises(PropertyError) as info:
        backend("hosts.json")
    assert info.value.name == "files/config"
    assert "'hosts.json' is not an absolute path" in str(info.value)


def test_config_is_required():
    with pytest.raises(PropertyError, match="files/config: unset required property"):
        resolve(FilesBackend.properties, {})
    with pytest.raises(PropertyError, match="files/config: unset required property"):
        FilesBackend(CONTEXT, {})


def test_reload_interval_default_and_maximum():
    props = resolve(FilesBackend.properties, {"files/config": "/x.json"})
    assert props["files/reload_interval"] == 1
    with pytest.raises(PropertyError, match="files/reload_interval: 3601 is above the maximum 3600"):
        resolve(FilesBackend.properties, {"files/config": "/x.json", "files/reload_interval": "3601"})


# -- start ---------------------------------------------------------------------------------

async def test_start_on_bad_file_is_a_config_error(tmp_path):
    p = tmp_path / "hosts.json"
    write_in_place(p, '{\n"de:ad:be:ef:00:01": {"ip": "192.0.2.1", "port": 0}\n}')
    b = backend(p)
    with pytest.raises(ConfigError, match=rf"^{p}:2: de:ad:be:ef:00:01: field 'port': 0 is below 1$"):
        await b.start()
    await b.stop()


async def test_start_on_missing_file_is_a_config_error(tmp_path):
    b = backend(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="cannot read"):
        await b.start()
    await b.stop()


async def test_start_serves_the_file(running):
    assert len(running.mapping) == 3
    assert running.degraded is None
    assert await running.lookup("de:ad:be:ef:00:01") == Destination(IPv4Address("192.0.2.2"), 4789)
    assert await running.arp(IPv4Address("10.55.55.4")) == "de:ad:be:ef:00:02"


# -- live reload ---------------------------------------------------------------------------

def _edit(data: dict) -> dict:
    """Change 00:00's port, remove 00:02, add 00:09."""
    data["de:ad:be:ef:00:00"]["port"] = 4790
    del data["de:ad:be:ef:00:02"]
    data["de:ad:be:ef:00:09"] = {"ip": "192.0.2.9", "port": 4789, "arp": "10.55.55.9"}
    return data


@pytest.mark.parametrize("writer", [write_in_place, rename_over], ids=["in-place", "rename-over"])
async def test_live_reload_emits_exactly_the_delta(running, writer):
    old = running.mapping
    rec = ChangeRecorder()
    running.add_listener(rec)
    writer(running.path, _edit(seed()))
    await rec.wait(1)
    await asyncio.sleep(5 * POLL)  # later polls (the file is "racy") must not re-emit anything
    assert len(rec.changes) == 1
    change = rec.changes[0]
    assert sorted(r.mac for r in change.upserted) == ["de:ad:be:ef:00:00", "de:ad:be:ef:00:09"]
    assert change.removed == (old.by_mac["de:ad:be:ef:00:02"],)  # the whole old record
    assert not change.full_resync
    assert await running.lookup("de:ad:be:ef:00:00") == Destination(IPv4Address("192.0.2.1"), 4790)
    assert await running.lookup("de:ad:be:ef:00:02") is None
    assert await running.arp(IPv4Address("10.55.55.4")) is None
    assert await running.arp(IPv4Address("10.55.55.9")) == "de:ad:be:ef:00:09"


async def test_same_size_same_second_rewrite_is_seen(running):
    """Only a digit changes (same size, likely same mtime tick): the racy-stamp logic still rereads it."""
    rec = ChangeRecorder()
    running.add_listener(rec)
    data = seed()
    data["de:ad:be:ef:00:01"]["port"] = 4788
    write_in_place(running.path, data)
    changes = await rec.wait(1)
    assert [r.mac for r in changes[0].upserted] == ["de:ad:be:ef:00:01"] and changes[0].removed == ()


async def test_rewrite_with_identical_content_emits_nothing(running):
    rec = ChangeRecorder()
    running.add_listener(rec)
    before = running.reloads
    rename_over(running.path, SEED)
    await until(lambda: running.reloads > before)
    assert rec.changes == []


async def test_bad_rewrite_keeps_mapping_and_degrades(running):
    old = running.mapping
    rec, status = ChangeRecorder(), []
    running.add_listener(rec)
    running.add_status_listener(status.append)
    write_in_place(running.path, '{\n"de:ad:be:ef:00:01": {"ip": "192.0.2.1", "port": 70000}\n}')
    await until(lambda: running.degraded is not None)
    assert str(running.path) in running.degraded
    assert "field 'port': 70000 is above 65535" in running.degraded
    assert "keeping the last good mapping" in running.degraded
    assert running.mapping is old
    assert await running.lookup("de:ad:be:ef:00:02") == Destination(IPv4Address("192.0.2.3"), 4789)
    await asyncio.sleep(5 * POLL)
    assert rec.changes == []
    assert status == [running.degraded]  # reported once, not once per poll

    # fixing the file clears it; status listeners are told None, the listener gets the delta only
    data = seed()
    data["de:ad:be:ef:00:02"]["port"] = 4791
    rename_over(running.path, data)
    await until(lambda: running.degraded is None)
    assert status[-1] is None and len(status) == 2
    changes = await rec.wait(1)
    assert [r.mac for r in changes[0].upserted] == ["de:ad:be:ef:00:02"]


async def test_invalid_json_rewrite_degrades(running):
    write_in_place(running.path, '{"de:ad:be:ef:00:01": ')
    await until(lambda: running.degraded is not None)
    assert f"{running.path}:1:23: invalid JSON" in running.degraded
    assert len(running.mapping) == 3


async def test_deleted_file_degrades_and_keeps_mapping(running):
    old = running.mapping
    rec = ChangeRecorder()
    running.add_listener(rec)
    running.path.unlink()
    await until(lambda: running.degraded is not None)
    assert str(running.path) in running.degraded and "cannot read" in running.degraded
    assert running.mapping is old
    assert await running.lookup("de:ad:be:ef:00:00") == Destination(IPv4Address("192.0.2.1"), 4789)
    assert rec.changes == []
    # and it comes back
    write_in_place(running.path, SEED)
    await until(lambda: running.degraded is None)
    assert rec.changes == []  # same content: no delta


async def test_explicit_reload_raises_and_degrades(hosts):
    b = backend(hosts, interval=None, **{"files/reload_interval": 0})
    await b.start()
    try:
        write_in_place(hosts, "[]")
        with pytest.raises(ConfigError, match="the top level must be an object"):
            await b.reload()
        assert b.degraded is not None and str(hosts) in b.degraded
        assert len(b.mapping) == 3
        write_in_place(hosts, _edit(seed()))
        change = await b.reload()
        assert b.degraded is None
        assert sorted(r.mac for r in change.upserted) == ["de:ad:be:ef:00:00", "de:ad:be:ef:00:09"]
        assert [r.mac for r in change.removed] == ["de:ad:be:ef:00:02"]
        assert not await b.reload()  # nothing changed since: an empty (falsy) change
    finally:
        await b.stop()


async def test_reload_interval_zero_never_reloads(hosts):
    b = backend(hosts, interval=None, **{"files/reload_interval": "0"})
    assert b.interval == 0
    rec = ChangeRecorder()
    b.add_listener(rec)
    await b.start()
    try:
        n = len(rec.changes)  # listeners added before start see the initial load
        rename_over(hosts, _edit(seed()))
        await asyncio.sleep(0.3)
        assert len(rec.changes) == n
        assert await b.lookup("de:ad:be:ef:00:02") is not None
        assert b.reloads == 0
        assert b.changed()  # it can tell, it just does not look by itself
        await b.reload()
        assert await b.lookup("de:ad:be:ef:00:02") is None
    finally:
        await b.stop()


async def test_listener_added_before_start_sees_the_initial_load(hosts):
    b = backend(hosts)
    rec = ChangeRecorder()
    b.add_listener(rec)
    await b.start()
    try:
        assert len(rec.changes) == 1
        assert {r.mac for r in rec.changes[0].upserted} == set(SEED)
    finally:
        await b.stop()


async def test_stop_twice_and_stop_cancels_watcher(running):
    await running.stop()
    await running.stop()
    rec = ChangeRecorder()
    running.add_listener(rec)
    rename_over(running.path, _edit(seed()))
    await asyncio.sleep(5 * POLL)
    assert rec.changes == []


async def test_file_with_oversized_integer_degrades(hosts):
    b = backend(hosts, interval=None, **{"files/reload_interval": 0})
    await b.start()
    try:
        write_in_place(hosts, '{"de:ad:be:ef:00:01": {"ip": "192.0.2.1", "port": ' + "9" * 5000 + "}}")
        with pytest.raises(ConfigError):
            await b.reload()
        assert b.degraded is not None
    finally:
        await b.stop()
