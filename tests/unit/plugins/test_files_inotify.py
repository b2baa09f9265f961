"""The files backend follows its hosts.json with inotify: every way a file gets edited is one reload,
exactly one, without any poll (files/reload_interval is an hour here); one watcher serves every backend."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _waiting import wait_until

from varpd.backend.conformance import CONTEXT, ChangeRecorder
from varpd.backend.properties import resolve
from varpd_plugins import file_watch
from varpd_plugins.files import SETTLE, FilesBackend

SEED = {"de:ad:be:ef:00:01": {"ip": "192.0.2.2", "port": 4789, "arp": "10.55.55.3"},
        "de:ad:be:ef:00:02": {"ip": "192.0.2.3", "port": 4789}}
EDITED = {**SEED, "de:ad:be:ef:00:02": {"ip": "192.0.2.9", "port": 4789}}
QUIET = 4 * SETTLE  # long enough for any second reload to have happened


def backend(path: Path, **props) -> FilesBackend:
    """Watched by inotify, polled only once an hour: a reload within seconds came from an event."""
    values = {"files/config": str(path), "files/reload_interval": 3600, **props}
    return FilesBackend(CONTEXT, resolve(FilesBackend.properties, values))


@pytest.fixture
async def watched(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    path = conf / "hosts.json"
    path.write_text(json.dumps(SEED))
    b = backend(path)
    await b.start()
    rec = ChangeRecorder()
    b.add_listener(rec)
    assert b._subscription is not None and b._task is None  # watched, not polled
    yield b, path, rec
    await b.stop()


async def reloaded_once(b: FilesBackend, rec: ChangeRecorder) -> None:
    await wait_until(lambda: b.reloads >= 1, timeout=3, what="a reload")
    await asyncio.sleep(QUIET)
    assert b.reloads == 1, f"{b.reloads} reloads for one edit"
    assert len(rec.changes) == 1 and [r.mac for r in rec.changes[0].upserted] == ["de:ad:be:ef:00:02"]
    assert b.degraded is None


def write_then_rename(path: Path) -> None:
    tmp = path.with_name(".hosts.json.swp")
    tmp.write_text(json.dumps(EDITED))
    os.replace(tmp, path)


def rewrite_in_place(path: Path) -> None:
    with open(path, "w") as f:  # O_TRUNC, several writes, one close
        text = json.dumps(EDITED)
        f.write(text[:10])
        f.flush()
        f.write(text[10:])


def delete_and_recreate(path: Path) -> None:
    path.unlink()
    path.write_text(json.dumps(EDITED))


def vim_backup_rename(path: Path) -> None:
    """vim's default (backupcopy=auto): the old file renamed to the backup, a new file written."""
    os.rename(path, path.with_name("hosts.json~"))
    path.write_text(json.dumps(EDITED))
    path.with_name("hosts.json~").unlink()


def sed_in_place(path: Path) -> None:
    subprocess.run(["sed", "-i", "s/192.0.2.3/192.0.2.9/", str(path)], check=True)


def replace_directory(path: Path) -> None:
    """A configuration management tool's swap: the new directory renamed over the old one's place."""
    conf = path.parent
    new = conf.with_name("conf.new")
    new.mkdir()
    (new / "hosts.json").write_text(json.dumps(EDITED))
    os.rename(conf, conf.with_name("conf.old"))
    os.rename(new, conf)


def recreate_directory(path: Path) -> None:
    shutil.rmtree(path.parent)
    path.parent.mkdir()
    path.write_text(json.dumps(EDITED))


@pytest.mark.parametrize("edit", [write_then_rename, rewrite_in_place, delete_and_recreate, vim_backup_rename,
                                  sed_in_place, replace_directory, recreate_directory],
                         ids=lambda f: f.__name__)
async def test_each_kind_of_edit_is_one_reload(watched, edit):
    b, path, rec = watched
    edit(path)
    await reloaded_once(b, rec)


async def test_later_edits_of_a_replaced_directory_are_followed(watched):
    b, path, rec = watched
    replace_directory(path)
    await reloaded_once(b, rec)
    write_then_rename(path)  # same content: a reload, no change
    path.write_text(json.dumps(SEED))
    await wait_until(lambda: len(rec.changes) == 2, timeout=3, what="the edit in the new directory")
    shutil.rmtree(path.parent.with_name("conf.old"))  # the old directory's events are not ours
    await asyncio.sleep(QUIET)
    assert len(rec.changes) == 2


async def test_a_file_deleted_for_good_degrades_once_and_recovers(watched):
    b, path, rec = watched
    path.unlink()
    await wait_until(lambda: b.degraded is not None, timeout=3, what="DEGRADED")
    assert "cannot read" in b.degraded and b.reloads == 0 and rec.changes == []
    path.write_text(json.dumps(EDITED))
    await reloaded_once(b, rec)


async def test_touch_and_reads_do_not_reload(watched):
    b, path, rec = watched
    path.read_text()
    os.chmod(path, 0o644)
    os.utime(path)  # a new mtime: looked at, re-read (same content: no change emitted)
    await wait_until(lambda: b.reloads == 1, timeout=3, what="the touched file read")
    await asyncio.sleep(QUIET)
    assert b.reloads == 1 and rec.changes == []
    (path.parent / "other.json").write_text("{}")  # other files of the directory are not ours
    await asyncio.sleep(QUIET)
    assert b.reloads == 1


async def test_one_watcher_for_many_backends(tmp_path):
    """Fifty overlays, files in two directories: one inotify instance, two watches, each edit reloads its own."""
    paths = []
    for i in range(50):
        d = tmp_path / f"d{i % 2}"
        d.mkdir(exist_ok=True)
        p = d / f"hosts{i}.json"
        p.write_text(json.dumps(SEED))
        paths.append(p)
    fds_before = len(os.listdir("/proc/self/fd"))
    backends = [backend(p) for p in paths]
    for b in backends:
        await b.start()
    try:
        watcher = file_watch._watchers[asyncio.get_running_loop()]
        assert len(watcher.watches) == 2
        assert len(os.listdir("/proc/self/fd")) - fds_before <= 2  # the inotify fd and its selector's
        write_then_rename(paths[7])
        await wait_until(lambda: backends[7].reloads == 1, timeout=3, what="backend 7 reloaded")
        await asyncio.sleep(QUIET)
        assert [b.reloads for b in backends] == [int(i == 7) for i in range(50)]
    finally:
        for b in backends:
            await b.stop()
    assert asyncio.get_running_loop() not in file_watch._watchers  # the last one out closes it
    # (its fd a turn of the loop later, once the watcher's task has let go of it)
    await wait_until(lambda: len(os.listdir("/proc/self/fd")) == fds_before, timeout=1, what="the inotify fd closed")


async def test_without_inotify_the_file_is_polled(tmp_path, monkeypatch, caplog):
    def no_instances():
        raise OSError(24, "Too many open files")
    monkeypatch.setattr(file_watch, "Inotify", no_instances)
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(SEED))
    b = backend(path, **{"files/reload_interval": 0.05})
    await b.start()
    try:
        assert b._subscription is None and b._task is not None
        assert "event=inotify-unavailable" in caplog.text and "action=poll" in caplog.text
        write_then_rename(path)
        await wait_until(lambda: b.reloads == 1, timeout=3, what="a polled reload")
    finally:
        await b.stop()


async def test_watch_poll_is_chosen_by_property(tmp_path):
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(SEED))
    b = backend(path, **{"files/watch": "poll"})
    await b.start()
    try:
        assert b._subscription is None and b._task is not None
    finally:
        await b.stop()


async def test_the_last_unsubscribe_never_closes_the_fd_under_a_queued_read(tmp_path):
    """An event already read as ready when the last subscriber leaves (the daemon stopping while
    its log, next to hosts.json, is being written): the queued read finds the fd still open, and
    the fd is closed once the watcher's task has let go of it. Closing it at once made asyncio log
    'Exception in callback Inotify._get ... closed inotify' at SIGTERM (1 stop in ~10 in a lab)."""
    loop = asyncio.get_running_loop()
    errors = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        sub = file_watch.watch_file(tmp_path / "hosts.json", lambda kind: None)
        watcher = sub._watcher
        await asyncio.sleep(0.05)  # its task waits on the fd
        (tmp_path / "varpd.log").write_text("a line\n")  # the fd is readable: the next select queues its read
        loop.call_soon(sub.close)  # ...after this, in the same turn of the loop
        await asyncio.sleep(0.05)
        assert errors == []
        assert watcher.task.done() and not watcher.inotify._finalizer.alive  # closed, once let go of
    finally:
        loop.set_exception_handler(None)
