"""`Type=notify`: a real varpd tells its service manager READY=1 only once its admin socket answers
and its overlays are programmed, and STOPPING=1 on SIGTERM (the test plays systemd's NOTIFY_SOCKET)."""
from __future__ import annotations

import signal
import socket

from _overlay_helpers import remote_fdb_ok
from varpd.lab import Lab, seed_hosts, session_prefix, write_hosts_json, write_varpd_config


def _fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


def test_ready_after_socket_and_entries_then_stopping_on_sigterm(tmp_path, monkeypatch):
    hosts = seed_hosts(2)
    h1 = hosts[0]
    lab = Lab(hosts, prefix=session_prefix("vt-", "sdn"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    try:
        lab.up()
        (tmp_path / "state").mkdir()
        write_hosts_json(tmp_path / "hosts.json", hosts)
        cfg = write_varpd_config(tmp_path / "varpd.toml", h1, hosts_json=tmp_path / "hosts.json",
                                 state_dir=tmp_path / "state", sock=tmp_path / "varpd.sock", mode="push")
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        proc = lab.start_varpd(h1, cfg)
        ready = _fields(notify.recv(4096))
        # at the moment READY arrives, the CLI can be used and the mapping is in the kernel
        assert lab.api(h1, "/v1/health")[0] == 200
        assert remote_fdb_ok(lab, h1, hosts[1:]), "READY before the overlay was programmed"
        assert ready["READY"] == "1" and ready["MAINPID"] == str(proc.pid)
        assert ready["STATUS"] == "serving 1 overlay (1 online)"
        proc.send_signal(signal.SIGTERM)
        assert _fields(notify.recv(4096))["STOPPING"] == "1"
        assert proc.wait(10) == 0
    finally:
        notify.close()
        lab.down()
