"""The overlay commands end to end against a real AdminServer around a fake daemon."""
from __future__ import annotations

import pytest

from varpd.cli.main import main
from varpd.config.daemon import OverlayConfig


def test_create_overlay_sends_the_config(varpd, daemon):
    rc, out, err = varpd("create-overlay", "-t", "-e", "vxlan", "-s", "files", "-v", "7",
                         "-p", "vxlan/listen_ip=192.0.2.1,vxlan/listen_port=4790",
                         "-p", "files/config=/etc/varpd/a=b.json", "-m", "push", "-b", "br0", "vx7")
    assert (rc, out, err) == (0, "created overlay vx7 (vni 7, files, push)\n", "")
    assert daemon.service.created == [OverlayConfig(
        name="vx7", vni=7, search="files", mode="push", bridge="br0", persist=False,
        properties={"vxlan/listen_ip": "192.0.2.1", "vxlan/listen_port": "4790",
                    "files/config": "/etc/varpd/a=b.json"})]


def test_create_overlay_is_persistent_unless_t(varpd, daemon):
    assert varpd("create-overlay", "-s", "files", "-v", "7", "vx7")[0] == 0
    assert daemon.service.created[-1].persist is True


@pytest.mark.parametrize("args, message", [
    (("-s", "files", "-v", "16777216", "vx7"), "vni: Input should be less than or equal to 16777215"),
    (("-s", "files", "-v", "7", "-p", "mtu", "vx7"), "-p 'mtu': expected property=value"),
    (("-s", "nope", "-v", "7", "vx7"), "no backend 'nope' is installed"),
    (("-s", "files", "-v", "7", "vx23"), "overlay 'vx23' already exists"),
    (("-s", "kmod", "-v", "7", "vx7"), "RuntimeError: netlink: RTM_NEWLINK failed: File exists"),
])
def test_create_overlay_errors_are_one_line(varpd, args, message):
    assert varpd("create-overlay", *args) == (1, "", f"varpd: create-overlay: {message}\n")


def test_create_overlay_without_search_is_a_usage_error(varpd):
    with pytest.raises(SystemExit) as exc:
        varpd("create-overlay", "-v", "7", "vx7")
    assert exc.value.code == 2


def test_delete_overlay(varpd, daemon):
    assert varpd("delete-overlay", "vx23") == (0, "", "")
    assert [o.name for o in daemon.service.overlays()] == ["vx42"]
    assert varpd("delete-overlay", "vx23") == (1, "", "varpd: delete-overlay: overlay 'vx23' not found\n")


def test_reconcile_prints_the_report(varpd):
    assert varpd("reconcile", "vx23") == (0, "added=2 removed=1\n", "")


def test_show_overlay_properties(varpd):
    assert varpd("show-overlay", "vx23") == (0, (
        "LINK  PROPERTY           PERM  VALUE                  DEFAULT  POSSIBLE\n"
        "vx23  vxlan/listen_ip    rw    192.0.2.1              --       --\n"
        "vx23  vxlan/listen_port  r-    4789                   4789     1-65535\n"
        "vx23  files/config       r-    /etc/varpd/hosts.json  --       --\n"), "")


def test_show_overlay_status(varpd):
    assert varpd("show-overlay", "-f") == (0, (
        "LINK  STATUS    MODE       PLUGIN  VNI  DETAILS\n"
        "vx23  ONLINE    push       files   23   --\n"
        "vx42  DEGRADED  on-demand  direct  42   no route to 2001:db8::9\n"), "")


def test_show_overlay_kernel_entries(varpd):
    assert varpd("show-overlay", "-t") == (0, (
        "LINK  KIND   TARGET             DESTINATION        ORIGIN     AGE\n"
        "vx23  fdb    02:00:00:00:00:02  192.0.2.2:4789     push       12\n"
        "vx23  neigh  10.0.0.2           02:00:00:00:00:02  on-demand  3\n"), "")


def test_show_overlay_parseable_escapes_colons(varpd):
    assert varpd("show-overlay", "-t", "-p", "-o", "Target,DESTINATION,origin") == (0, (
        "02\\:00\\:00\\:00\\:00\\:02:192.0.2.2\\:4789:push\n"
        "10.0.0.2:02\\:00\\:00\\:00\\:00\\:02:on-demand\n"), "")
    assert varpd("show-overlay", "-f", "-p", "-o", "link,details", "vx42") == (
        0, "vx42:no route to 2001\\:db8\\:\\:9\n", "")


def test_show_overlay_output_columns(varpd):
    assert varpd("show-overlay", "-f", "-o", "vni,link") == (0, "VNI  LINK\n23   vx23\n42   vx42\n", "")


def test_show_overlay_parseable_needs_output(varpd):
    assert varpd("show-overlay", "-p") == (1, "", "varpd: show-overlay: -p requires -o field,...\n")


def test_show_overlay_unknown_field_is_named(varpd):
    rc, out, err = varpd("show-overlay", "-f", "-o", "link,colour")
    assert (rc, out) == (1, "")
    assert err.startswith("varpd: show-overlay: unknown field 'colour' (fields: link,status,")


@pytest.mark.parametrize("view", [(), ("-f",), ("-t",)])
def test_show_overlay_unknown_overlay_exits_1(varpd, view):
    assert varpd("show-overlay", *view, "x") == (1, "", "varpd: show-overlay: overlay 'x' not found\n")


@pytest.mark.parametrize("name", ["vx23#x", "vx23?x", "vx23/entries", ".."])
def test_names_are_not_read_as_url_syntax(varpd, name):
    assert varpd("show-overlay", "-f", name) == (1, "", f"varpd: show-overlay: overlay {name!r} not found\n")


def test_daemon_not_running(sock_dir, capsys):
    path = sock_dir / "varpd.sock"
    assert main(["--socket", str(path), "show-overlay"]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"varpd: show-overlay: cannot reach the daemon at {path}: "
                              "No such file or directory (is `varpd daemon` running?)\n")


def test_socket_from_environment(daemon, capsys, monkeypatch):
    monkeypatch.setenv("VARPD_SOCKET", str(daemon.socket_path))
    assert main(["show-overlay", "-f", "-p", "-o", "link"]) == 0
    assert capsys.readouterr().out == "vx23\nvx42\n"
