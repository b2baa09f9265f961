"""The NOTIFY_SOCKET protocol as systemd speaks it (sd_notify(3)), played by a test socket."""
from __future__ import annotations

import os
import socket

import pytest

from varpd.daemon.sdnotify import Notifier


def _listener(address):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(2)
    return s


def _fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


def test_ready_and_stopping_reach_a_path_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    with _listener(path) as s:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        n = Notifier()
        assert "NOTIFY_SOCKET" not in os.environ  # no child process may speak for the daemon
        n.ready("serving 2 overlays (2 online)")
        n.stopping("stopping")
        ready, stopping = _fields(s.recv(4096)), _fields(s.recv(4096))
        n.close()
    assert ready == {"READY": "1", "STATUS": "serving 2 overlays (2 online)", "MAINPID": str(os.getpid())}
    assert stopping == {"STOPPING": "1", "STATUS": "stopping"}


def test_abstract_socket_name():
    name = f"varpd-test-{os.getpid()}"
    with _listener(b"\0" + name.encode()) as s:
        n = Notifier(f"@{name}")
        n.notify(READY=1)
        assert s.recv(4096) == b"READY=1"
        n.close()


def test_without_a_manager_every_call_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    n.ready("x")
    n.stopping("y")


def test_a_manager_that_went_away_is_logged_not_raised(tmp_path, caplog):
    n = Notifier(str(tmp_path / "gone"))
    n.ready("x")
    assert "event=notify-failed" in caplog.text
    n.close()


@pytest.mark.parametrize("address", ["vsock:2:1234", "relative/path"])
def test_unsupported_addresses_are_refused_with_a_warning(address, caplog):
    assert not Notifier(address).enabled
    assert "event=notify-unsupported" in caplog.text
