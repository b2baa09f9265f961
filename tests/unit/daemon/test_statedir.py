"""The daemon's own state files: private (0600 in 0700, tightened at start), one daemon per state_dir,
a truncated file named in the log when it is dropped, and no literal secret saved where a file can serve."""
from __future__ import annotations

import json
import logging
import os
import stat

import pytest

from varpd.backend.errors import PropertyError
from varpd.config.daemon import DaemonSettings, OverlayConfig
from varpd.daemon.errors import StateError
from varpd.daemon.service import Varpd
from varpd.daemon.state import StateStore
from varpd.daemon.statedir import claim

CFG = OverlayConfig(name="vx23", vni=23, search="files", bridge="br0",
                    properties={"vxlan/listen_ip": "192.0.2.1", "files/config": "/etc/hosts.json"})


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_state_files_are_0600_in_0700_directories_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        store = StateStore(tmp_path / "state")
        store.save(CFG)
        store.save_created("vx23", True, True)
        store.save_overrides("vx23", {"02:00:00:00:00:01": "drop"})
    finally:
        os.umask(old)
    for sub in ("overlays", "devices", "overrides"):
        assert _mode(tmp_path / "state" / sub) == 0o700
        assert _mode(tmp_path / "state" / sub / "vx23.json") == 0o600


def test_claim_tightens_what_an_older_varpd_left_and_leaves_symlinks_alone(tmp_path, caplog):
    state = tmp_path / "state"
    (state / "overlays").mkdir(parents=True)
    state.chmod(0o755)
    (state / "overlays").chmod(0o755)
    saved = state / "overlays" / "vx23.json"
    saved.write_text("{}")
    saved.chmod(0o644)
    outside = tmp_path / "elsewhere"
    outside.write_text("not varpd's")
    outside.chmod(0o644)
    (state / "overlays" / "link.json").symlink_to(outside)
    caplog.set_level(logging.WARNING)
    lock = claim(state)
    try:
        assert (_mode(state), _mode(state / "overlays"), _mode(saved)) == (0o700, 0o700, 0o600)
        assert _mode(state / "daemon.lock") == 0o600 and _mode(outside) == 0o644
        assert "event=state-permissions-tightened paths=3" in caplog.text
        assert not (state / ".write-probe.json").exists()
    finally:
        lock.release()


def test_a_shared_sticky_state_dir_is_not_made_private_but_its_subdirectories_are(tmp_path, caplog):
    state = tmp_path / "shared"
    state.mkdir()
    state.chmod(0o1777)
    lock = claim(state)
    try:
        assert _mode(state) == 0o1777 and _mode(state / "devices") == 0o700
        assert "event=state-dir-shared" in caplog.text
    finally:
        lock.release()


def test_one_claim_per_state_dir_until_released(tmp_path):
    first = claim(tmp_path)
    with pytest.raises(StateError, match=rf"another varpd \(pid {os.getpid()}\) is running with state_dir "
                                         rf"{tmp_path} \(it holds {tmp_path}/daemon.lock\)"):
        claim(tmp_path)
    first.release()
    claim(tmp_path).release()


@pytest.mark.parametrize("sub,load", [("overrides", lambda s: s.load_overrides("vx23")),
                                      ("devices", lambda s: s.load_created("vx23"))])
def test_a_truncated_state_file_is_dropped_with_one_line_naming_it(tmp_path, caplog, sub, load):
    store = StateStore(tmp_path)
    store.save_overrides("vx23", {"02:00:00:00:00:01": "192.0.2.9:4789"})
    store.save_created("vx23", True, True)
    path = tmp_path / sub / "vx23.json"
    path.write_text(path.read_text()[:9])
    caplog.set_level(logging.ERROR)
    assert load(store) in ({}, (False, False))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"state={path} event=state-unreadable" in lines[0] and "action=dropped" in lines[0]
    caplog.clear()
    (tmp_path / sub / "vx23.json").unlink()
    assert load(store) in ({}, (False, False)) and not caplog.records  # absent is not an error


def test_a_failed_write_keeps_the_old_file_and_leaves_no_tmp(tmp_path):
    store = StateStore(tmp_path)
    store.save(CFG)
    before = (tmp_path / "overlays" / "vx23.json").read_text()
    (tmp_path / "overlays" / "vx23.json.tmp").mkdir()  # the temporary file cannot be created
    with pytest.raises(StateError, match=r"cannot save state file .*overlays/vx23.json: Is a directory"):
        store.save(CFG.model_copy(update={"vni": 24}))
    assert (tmp_path / "overlays" / "vx23.json").read_text() == before


HTTP = {"vxlan/listen_ip": "192.0.2.1", "http/url": "http://192.0.2.254:8080"}


async def test_a_literal_secret_is_never_saved_the_file_property_is(tmp_path):
    service = Varpd(DaemonSettings(state_dir=tmp_path, socket=tmp_path / "s"))
    cfg = OverlayConfig(name="vx40", vni=40, search="http", properties={**HTTP, "http/token": "s3cret"})
    with pytest.raises(PropertyError, match=r"http/token: a literal secret is not saved in the state directory: .*"
                                            r"give http/token_file, or create the overlay with -t"):
        await service.create_overlay(cfg)
    assert not (tmp_path / "overlays").exists() or not list((tmp_path / "overlays").iterdir())
    etcd = OverlayConfig(name="vx41", vni=41, search="etcd", properties={
        "vxlan/listen_ip": "192.0.2.1", "etcd/endpoints": "192.0.2.254:2379", "etcd/password": "s3cret"})
    with pytest.raises(PropertyError, match=r"etcd/password: .*give etcd/password_file"):
        await service.create_overlay(etcd)
    assert not any("s3cret" in p.read_text() for p in tmp_path.rglob("*.json"))
