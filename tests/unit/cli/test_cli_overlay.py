"""The overlay commands end to end: varpd.cli.main.main() against a real AdminServer around the
FakeService (tests/unit/admin/fake_service.py).

The server runs in its own thread and event loop (fixture `daemon`); the CLI calls asyncio.run()
itself, so these tests are synchronous.
"""
from __future__ import annotations

import socket

import pytest

from varpd.cli.main import main
from varpd.config.daemon import OverlayConfig


def _one_error_line(err: str, command: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert err.startswith(f"varpd: {command}: "), repr(err)
    return err[len(f"varpd: {command}: "):].rstrip("\n")


# -- create-overlay -----------------------------------------------------------------------
def test_create_overlay_sends_the_config(varpd, daemon):
    """-t, -e, repeated and comma-separated -p (with '=' in a value), -m, -b."""
    rc, out, err = varpd("create-overlay", "-t", "-e", "vxlan", "-s", "files", "-v", "7",
                         "-p", "vxlan/listen_ip=192.0.2.1,vxlan/listen_port=4790",
                         "-p", "files/config=/etc/varpd/a=b.json,link/mtu=1450",
                         "-m", "on-demand", "-b", "br0", "vx7")
    assert (rc, out, err) == (0, "created overlay vx7 (vni 7, files, on-demand)\n", "")
    assert daemon.service.created == [OverlayConfig(
        name="vx7", vni=7, encap="vxlan", search="files", mode="on-demand", bridge="br0", persist=False,
        properties={"vxlan/listen_ip": "192.0.2.1", "vxlan/listen_port": "4790",
                    "files/config": "/etc/varpd/a=b.json", "link/mtu": "1450"})]
    assert "vx7" in [o.name for o in daemon.service.overlays()]


def test_a_comma_separated_list_value_stays_whole(varpd, daemon):
    """-p dhcp/dns=A,B is one property whose value is the list (the docs call it comma-separated)."""
    rc, out, err = varpd("create-overlay", "-s", "files", "-v", "9",
                         "-p", "vxlan/listen_ip=192.0.2.1,dhcp/dns=10.77.0.53,10.77.0.54,files/config=/h.json",
                         "-p", "dhcp/subnet=10.77.0.0/24", "vx9")
    assert (rc, err) == (0, ""), err
    assert dict(daemon.service.created[-1].properties) == {
        "vxlan/listen_ip": "192.0.2.1", "dhcp/dns": "10.77.0.53,10.77.0.54", "files/config": "/h.json",
        "dhcp/subnet": "10.77.0.0/24"}


def test_create_overlay_defaults_persistent_auto_no_bridge(varpd, daemon):
    rc, out, err = varpd("create-overlay", "-s", "direct", "-v", "8",
                         "-p", "vxlan/listen_ip=192.0.2.1,direct/dest_ip=192.0.2.9", "vx8")
    assert (rc, out, err) == (0, "created overlay vx8 (vni 8, direct, point)\n", "")
    cfg = daemon.service.created[-1]
    assert cfg.persist is True and cfg.mode == "auto" and cfg.bridge is None and cfg.encap == "vxlan"
    assert dict(cfg.properties) == {"vxlan/listen_ip": "192.0.2.1", "direct/dest_ip": "192.0.2.9"}


@pytest.mark.parametrize("args, message", [
    (("-s", "files", "-v", "7", "-p", "mtu", "vx7"), "-p 'mtu': expected property=value"),
    (("-s", "nope", "-v", "7", "vx7"), "unknown plugin 'nope' (installed: direct, files)"),
    (("-s", "files", "-v", "7", "-p", "files/nope=1", "vx7"), "property files/nope: unknown property"),
    (("-s", "files", "-v", "7", "vx23"), "overlay 'vx23' already exists"),
    (("-s", "kmod", "-v", "7", "vx7"), "RuntimeError: netlink: RTM_NEWLINK failed: File exists"),
])
def test_create_overlay_errors_are_one_line(varpd, args, message):
    assert varpd("create-overlay", *args) == (1, "", f"varpd: create-overlay: {message}\n")


@pytest.mark.parametrize("bad", ["vxlan/listen_ip", "c,a=b", "=x", "a=b,", "a=b,,c"])
def test_create_overlay_prop_without_equals_is_not_sent(varpd, daemon, bad):
    rc, out, err = varpd("create-overlay", "-s", "files", "-v", "7", "-p", bad, "vx7")
    assert rc == 1 and out == ""
    assert "expected property=value" in _one_error_line(err, "create-overlay")
    assert daemon.service.created == []  # nothing was sent


@pytest.mark.parametrize("args, field", [
    (("-s", "files", "-v", "9", "a-name-too-long-for-ifnamsiz"), "name"),
    (("-s", "files", "-v", "9", "a/b"), "name"),
])
def test_create_overlay_invalid_values_name_the_field(varpd, daemon, args, field):
    rc, out, err = varpd("create-overlay", *args)
    assert rc == 1 and out == ""
    assert _one_error_line(err, "create-overlay").startswith(f"{field}: ")
    assert daemon.service.created == []


def test_create_overlay_without_search_is_a_usage_error(varpd):
    with pytest.raises(SystemExit) as exc:
        varpd("create-overlay", "-v", "7", "vx7")
    assert exc.value.code == 2


# -- delete-overlay / reconcile --------------------------------------------------------------
def test_delete_overlay(varpd, daemon):
    assert varpd("delete-overlay", "vx23") == (0, "", "")
    assert daemon.service.deleted == ["vx23"]
    assert [o.name for o in daemon.service.overlays()] == ["vx42"]
    assert varpd("delete-overlay", "vx23") == (1, "", "varpd: delete-overlay: overlay 'vx23' not found\n")


def test_reconcile_prints_the_report(varpd, daemon):
    assert varpd("reconcile", "vx23") == (0, "fdb_added=1 fdb_removed=0 neigh_added=2 neigh_removed=0\n", "")
    assert daemon.service.reconciled == ["vx23"]


def test_reconcile_unknown(varpd):
    assert varpd("reconcile", "x") == (1, "", "varpd: reconcile: overlay 'x' not found\n")


# -- show-overlay ------------------------------------------------------------------------------
def test_show_overlay_properties(varpd):
    assert varpd("show-overlay", "vx23") == (0, (
        "LINK  PROPERTY           PERM  VALUE                  DEFAULT  POSSIBLE\n"
        "vx23  vxlan/listen_ip    rw*   192.0.2.1              --       --\n"
        "vx23  vxlan/listen_port  r-    4789                   4789     1-65535\n"
        "vx23  link/mtu           r-    --                     --       576-9000\n"
        "vx23  files/config       rw*   /etc/varpd/hosts.json  --       --\n"), "")


def test_show_overlay_properties_of_all_are_aligned(varpd):
    rc, out, err = varpd("show-overlay")
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["LINK", "PROPERTY", "PERM", "VALUE", "DEFAULT", "POSSIBLE"]
    assert len(lines) == 1 + 4 + 5
    assert [ln.split()[0] for ln in lines[1:]] == ["vx23"] * 4 + ["vx42"] * 5
    # every column starts at the same offset as its header
    starts = [lines[0].index(h) for h in ("PROPERTY", "PERM", "VALUE", "DEFAULT", "POSSIBLE")]
    for ln in lines[1:]:
        for s in starts:
            assert ln[s - 2:s] == "  " and ln[s] != " ", (ln, s)
    assert "vx42  direct/dest_ip     rw*   2001:db8::9" in out
    assert all(ln == ln.rstrip() for ln in lines)


def test_show_overlay_status(varpd):
    assert varpd("show-overlay", "-f") == (0, (
        "LINK  STATUS    MODE   PLUGIN  VNI  NETNS  DETAILS\n"
        "vx23  ONLINE    push   files   23   --     --\n"
        "vx42  DEGRADED  point  direct  42   tn1    no route to 2001:db8::9\n"), "")


def test_show_overlay_kernel_entries(varpd):
    assert varpd("show-overlay", "-t") == (0, (
        "LINK  KIND   TARGET             DESTINATION         ORIGIN     AGE\n"
        "vx23  fdb    02:08:20:00:00:02  [2001:db8::2]:4789  push       --\n"
        "vx23  fdb    02:08:20:00:00:03  192.0.2.3:4789      push       12\n"
        "vx23  neigh  10.55.55.2         02:08:20:00:00:02   on-demand  3\n"), "")


def test_show_overlay_kernel_entries_of_overlay_without_entries(varpd):
    assert varpd("show-overlay", "-t", "vx42") == (0, "LINK  KIND  TARGET  DESTINATION  ORIGIN  AGE\n", "")


def test_show_overlay_parseable_status(varpd):
    assert varpd("show-overlay", "-f", "-p", "-o", "link,status") == (0, "vx23:ONLINE\nvx42:DEGRADED\n", "")


def test_show_overlay_parseable_escapes_colons(varpd):
    assert varpd("show-overlay", "-t", "-p", "-o", "Target,DESTINATION,origin") == (0, (
        "02\\:08\\:20\\:00\\:00\\:02:[2001\\:db8\\:\\:2]\\:4789:push\n"
        "02\\:08\\:20\\:00\\:00\\:03:192.0.2.3\\:4789:push\n"
        "10.55.55.2:02\\:08\\:20\\:00\\:00\\:02:on-demand\n"), "")
    assert varpd("show-overlay", "-f", "-p", "-o", "link,details", "vx42") == (
        0, "vx42:no route to 2001\\:db8\\:\\:9\n", "")


def test_show_overlay_parseable_single_field_is_not_escaped(varpd):
    # as dladm/ofmt: with one field there is no separator, so nothing to escape
    assert varpd("show-overlay", "-t", "-p", "-o", "DESTINATION", "vx23") == (
        0, "[2001:db8::2]:4789\n192.0.2.3:4789\n02:08:20:00:00:02\n", "")


def test_show_overlay_parseable_properties(varpd):
    rc, out, _ = varpd("show-overlay", "-p", "-o", "property,value", "vx42")
    assert rc == 0
    assert "direct/dest_ip:2001\\:db8\\:\\:9\n" in out


def test_show_overlay_output_columns_case_insensitive_and_ordered(varpd):
    assert varpd("show-overlay", "-f", "-o", "vni,link") == (0, "VNI  LINK\n23   vx23\n42   vx42\n", "")
    assert varpd("show-overlay", "-f", "-o", "vni, Link", "vx42") == (0, "VNI  LINK\n42   vx42\n", "")


def test_show_overlay_parseable_needs_output(varpd):
    assert varpd("show-overlay", "-p") == (1, "", "varpd: show-overlay: -p requires -o field,...\n")


@pytest.mark.parametrize("view, fields", [((), "link,property,"), (("-f",), "link,status,"),
                                          (("-t",), "link,kind,")])
def test_show_overlay_unknown_field_is_named(varpd, view, fields):
    rc, out, err = varpd("show-overlay", *view, "-o", "link,colour")
    assert (rc, out) == (1, "")
    assert _one_error_line(err, "show-overlay").startswith(f"unknown field 'colour' (fields: {fields}")


@pytest.mark.parametrize("view", [(), ("-f",), ("-t",), ("-p", "-o", "link")])
def test_show_overlay_unknown_overlay_exits_1(varpd, view):
    assert varpd("show-overlay", *view, "x") == (1, "", "varpd: show-overlay: overlay 'x' not found\n")


def test_show_overlay_f_and_t_are_exclusive(varpd):
    with pytest.raises(SystemExit) as exc:
        varpd("show-overlay", "-f", "-t")
    assert exc.value.code == 2


def test_show_overlay_empty_daemon(varpd):
    for name in ("vx23", "vx42"):
        assert varpd("delete-overlay", name)[0] == 0
    assert varpd("show-overlay") == (0, "LINK  PROPERTY  PERM  VALUE  DEFAULT  POSSIBLE\n", "")
    assert varpd("show-overlay", "-f", "-p", "-o", "link,status") == (0, "", "")


# -- names and answers that once confused the client ------------------------------------------
@pytest.mark.parametrize("name", ["vx23#x", "vx23?x", "vx23/entries", ".."])
def test_names_are_not_read_as_url_syntax(varpd, name):
    assert varpd("show-overlay", "-f", name) == (1, "", f"varpd: show-overlay: overlay {name!r} not found\n")


def test_delete_overlay_name_with_hash_does_not_delete_another(varpd, daemon):
    rc, out, err = varpd("delete-overlay", "vx23#x")
    assert "vx23" in [o.name for o in daemon.service.overlays()]
    assert daemon.service.deleted == []
    assert (rc, out, err) == (1, "", "varpd: delete-overlay: overlay 'vx23#x' not found\n")


def test_non_json_error_answer_is_reported_as_the_http_error(varpd):
    # aiohttp's own 413 for a body over MAX_BODY
    rc, out, err = varpd("create-overlay", "-s", "files", "-v", "9", "-p", "files/config=" + "x" * 70_000, "vx9")
    assert rc == 1 and out == ""
    msg = _one_error_line(err, "create-overlay")
    assert "JSONDecodeError" not in msg and "bad answer" not in msg
    assert "too large" in msg.lower()


# -- where the daemon is ------------------------------------------------------------------------
def test_socket_from_environment(daemon, capsys, monkeypatch):
    monkeypatch.setenv("VARPD_SOCKET", str(daemon.socket_path))
    assert main(["show-overlay", "-f", "-p", "-o", "link"]) == 0
    assert capsys.readouterr().out == "vx23\nvx42\n"


def test_daemon_not_running(sock_dir, capsys):
    path = sock_dir / "varpd.sock"
    assert main(["--socket", str(path), "show-overlay"]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"varpd: show-overlay: cannot reach the daemon at {path}: "
                              "No such file or directory (is `varpd daemon` running?)\n")


def _assert_unreachable(rc, out, err, command, path):
    assert rc == 1 and out == ""
    msg = _one_error_line(err, command)
    assert str(path) in msg
    assert "is `varpd daemon` running?" in msg


@pytest.mark.parametrize("args", [("delete-overlay", "vx1"), ("reconcile", "vx1"),
                                  ("create-overlay", "-s", "files", "-v", "1", "vx1")])
def test_daemon_not_running_every_command(capsys, sock_dir, args):
    path = sock_dir / "absent.sock"
    rc = main(["--socket", str(path), *args])
    out, err = capsys.readouterr()
    _assert_unreachable(rc, out, err, args[0], path)


def test_daemon_not_running_stale_socket(capsys, sock_dir):
    path = sock_dir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    rc = main(["--socket", str(path), "show-overlay", "-f"])
    out, err = capsys.readouterr()
    _assert_unreachable(rc, out, err, "show-overlay", path)
