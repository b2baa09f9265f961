"""The CLI end to end: varpd.cli.main.main() against a real AdminServer around a FakeService.

The server runs in its own thread and event loop (fixture `admin`); the CLI calls
asyncio.run() itself, so these tests are synchronous.
"""
from __future__ import annotations

import socket

import pytest

from varpd.cli.main import main
from varpd.config.daemon import OverlayConfig


@pytest.fixture
def varpd(admin, capsys):
    """Run `varpd --socket <admin socket> ARGS...`; returns (exit code, stdout, stderr)."""

    def run(*args: str):
        rc = main(["--socket", str(admin.socket_path), *args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def _one_error_line(err: str, command: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert err.startswith(f"varpd: {command}: "), repr(err)
    return err[len(f"varpd: {command}: "):].rstrip("\n")


# -- create-overlay -----------------------------------------------------------------------
def test_create_overlay_repeated_and_comma_separated_props_temporary(varpd, admin):
    rc, out, err = varpd("create-overlay", "-t", "-s", "files", "-v", "7",
                         "-p", "vxlan/listen_ip=192.0.2.1",
                         "-p", "files/config=/etc/varpd/h=1.json,link/mtu=1450",
                         "-m", "on-demand", "-b", "br7", "vx7")
    assert (rc, err) == (0, "")
    assert out == "created overlay vx7 (vni 7, files, on-demand)\n"
    assert admin.service.created == [OverlayConfig(
        name="vx7", vni=7, encap="vxlan", search="files", mode="on-demand", bridge="br7", persist=False,
        properties={"vxlan/listen_ip": "192.0.2.1", "files/config": "/etc/varpd/h=1.json", "link/mtu": "1450"})]
    assert "vx7" in [o.name for o in admin.service.overlays()]


def test_create_overlay_defaults_persist(varpd, admin):
    rc, out, err = varpd("create-overlay", "-s", "direct", "-v", "8",
                         "-p", "vxlan/listen_ip=192.0.2.1,direct/dest_ip=192.0.2.9", "vx8")
    assert (rc, err) == (0, "")
    assert out == "created overlay vx8 (vni 8, direct, point)\n"
    cfg = admin.service.created[-1]
    assert cfg.persist is True and cfg.mode == "auto" and cfg.bridge is None and cfg.encap == "vxlan"
    assert dict(cfg.properties) == {"vxlan/listen_ip": "192.0.2.1", "direct/dest_ip": "192.0.2.9"}


@pytest.mark.parametrize("bad", ["vxlan/listen_ip", "a=b,c", "=x", "a=b,"])
def test_create_overlay_prop_without_equals_is_one_line_error(varpd, admin, bad):
    rc, out, err = varpd("create-overlay", "-s", "files", "-v", "7", "-p", bad, "vx7")
    assert rc == 1 and out == ""
    msg = _one_error_line(err, "create-overlay")
    assert "expected property=value" in msg
    assert admin.service.created == []  # nothing was sent


@pytest.mark.parametrize("args, message", [
    (("-s", "files", "-v", "9", "vx23"), "overlay 'vx23' already exists"),
    (("-s", "nope", "-v", "9", "vx9"), "unknown plugin 'nope' (installed: direct, files)"),
    (("-s", "files", "-v", "9", "-p", "files/nope=1", "vx9"), "property files/nope: unknown property"),
])
def test_create_overlay_daemon_errors(varpd, args, message):
    rc, out, err = varpd("create-overlay", *args)
    assert rc == 1 and out == ""
    assert _one_error_line(err, "create-overlay") == message


@pytest.mark.parametrize("args, field", [
    (("-s", "files", "-v", "99999999", "vx9"), "vni"),
    (("-s", "files", "-v", "9", "a-name-too-long-for-ifnamsiz"), "name"),
    (("-s", "files", "-v", "9", "a/b"), "name"),
])
def test_create_overlay_invalid_values_name_the_field(varpd, admin, args, field):
    rc, out, err = varpd("create-overlay", *args)
    assert rc == 1 and out == ""
    assert _one_error_line(err, "create-overlay").startswith(f"{field}: ")
    assert admin.service.created == []


# -- delete-overlay / reconcile --------------------------------------------------------------
def test_delete_overlay(varpd, admin):
    assert varpd("delete-overlay", "vx23") == (0, "", "")
    assert admin.service.deleted == ["vx23"]
    assert [o.name for o in admin.service.overlays()] == ["vx42"]


def test_delete_unknown_overlay(varpd, admin):
    rc, out, err = varpd("delete-overlay", "x")
    assert (rc, out, err) == (1, "", "varpd: delete-overlay: overlay 'x' not found\n")
    assert admin.service.deleted == []


def test_reconcile(varpd, admin):
    assert varpd("reconcile", "vx23") == (0, "fdb_added=1 fdb_removed=0 neigh_added=2 neigh_removed=0\n", "")
    assert admin.service.reconciled == ["vx23"]


def test_reconcile_unknown(varpd):
    assert varpd("reconcile", "x") == (1, "", "varpd: reconcile: overlay 'x' not found\n")


# -- show-overlay ------------------------------------------------------------------------------
PROPS_VX23 = (
    "LINK  PROPERTY           PERM  VALUE                  DEFAULT  POSSIBLE\n"
    "vx23  vxlan/listen_ip    rw*   192.0.2.1              --       --\n"
    "vx23  vxlan/listen_port  r-    4789                   4789     1-65535\n"
    "vx23  link/mtu           r-    --                     --       576-9000\n"
    "vx23  files/config       rw*   /etc/varpd/hosts.json  --       --\n"
)


def test_show_overlay_default_view_of_one(varpd):
    assert varpd("show-overlay", "vx23") == (0, PROPS_VX23, "")


def test_show_overlay_default_view_of_all_is_aligned(varpd):
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


def test_show_overlay_status_view(varpd):
    assert varpd("show-overlay", "-f") == (0, (
        "LINK  STATUS    MODE   PLUGIN  VNI  DETAILS\n"
        "vx23  ONLINE    push   files   23   --\n"
        "vx42  DEGRADED  point  direct  42   backend unreachable\n"), "")


def test_show_overlay_target_view(varpd):
    assert varpd("show-overlay", "-t") == (0, (
        "LINK  KIND   TARGET             DESTINATION         ORIGIN  AGE\n"
        "vx23  fdb    02:08:20:00:00:02  [2001:db8::2]:4789  push    --\n"
        "vx23  fdb    02:08:20:00:00:03  192.0.2.3:4789      push    --\n"
        "vx23  neigh  10.55.55.2         02:08:20:00:00:02   push    --\n"), "")


def test_show_overlay_target_view_of_overlay_without_entries(varpd):
    assert varpd("show-overlay", "-t", "vx42") == (0, "LINK  KIND  TARGET  DESTINATION  ORIGIN  AGE\n", "")


def test_show_overlay_parseable_status(varpd):
    assert varpd("show-overlay", "-f", "-p", "-o", "link,status") == (0, "vx23:ONLINE\nvx42:DEGRADED\n", "")


def test_show_overlay_parseable_escapes_colons(varpd):
    assert varpd("show-overlay", "-t", "-p", "-o", "target,destination", "vx23") == (0, (
        "02\\:08\\:20\\:00\\:00\\:02:[2001\\:db8\\:\\:2]\\:4789\n"
        "02\\:08\\:20\\:00\\:00\\:03:192.0.2.3\\:4789\n"
        "10.55.55.2:02\\:08\\:20\\:00\\:00\\:02\n"), "")


def test_show_overlay_parseable_single_field_is_not_escaped(varpd):
    # as dladm/ofmt: with one field there is no separator, so nothing to escape
    assert varpd("show-overlay", "-t", "-p", "-o", "DESTINATION", "vx23") == (
        0, "[2001:db8::2]:4789\n192.0.2.3:4789\n02:08:20:00:00:02\n", "")


def test_show_overlay_output_fields_case_insensitive_and_ordered(varpd):
    assert varpd("show-overlay", "-f", "-o", "vni, Link", "vx42") == (0, "VNI  LINK\n42   vx42\n", "")


def test_show_overlay_parseable_properties(varpd):
    rc, out, _ = varpd("show-overlay", "-p", "-o", "property,value", "vx42")
    assert rc == 0
    assert "direct/dest_ip:2001\\:db8\\:\\:9\n" in out


def test_show_overlay_parseable_without_output_is_error(varpd):
    rc, out, err = varpd("show-overlay", "-p")
    assert rc == 1 and out == ""
    assert "-p requires -o" in _one_error_line(err, "show-overlay")


@pytest.mark.parametrize("view", [(), ("-f",), ("-t",)])
def test_show_overlay_unknown_field_is_error_naming_it(varpd, view):
    rc, out, err = varpd("show-overlay", *view, "-o", "link,bogus")
    assert rc == 1 and out == ""
    assert "'bogus'" in _one_error_line(err, "show-overlay")


@pytest.mark.parametrize("view", [(), ("-f",), ("-t",), ("-p", "-o", "link")])
def test_show_overlay_unknown_overlay(varpd, view):
    assert varpd("show-overlay", *view, "x") == (1, "", "varpd: show-overlay: overlay 'x' not found\n")


def test_show_overlay_f_and_t_are_exclusive(varpd):
    with pytest.raises(SystemExit) as exc:
        varpd("show-overlay", "-f", "-t")
    assert exc.value.code == 2


def test_show_overlay_empty_daemon(varpd, admin):
    for name in ("vx23", "vx42"):
        assert varpd("delete-overlay", name)[0] == 0
    assert varpd("show-overlay") == (0, "LINK  PROPERTY  PERM  VALUE  DEFAULT  POSSIBLE\n", "")
    assert varpd("show-overlay", "-f", "-p", "-o", "link,status") == (0, "", "")


def test_socket_from_environment(admin, capsys, monkeypatch):
    monkeypatch.setenv("VARPD_SOCKET", str(admin.socket_path))
    assert main(["show-overlay", "-f", "-p", "-o", "link"]) == 0
    assert capsys.readouterr().out == "vx23\nvx42\n"


# -- the daemon is not there --------------------------------------------------------------------
def _assert_unreachable(rc, out, err, command, path):
    assert rc == 1 and out == ""
    msg = _one_error_line(err, command)
    assert str(path) in msg
    assert "is `varpd daemon` running?" in msg


@pytest.mark.parametrize("args", [("show-overlay",), ("delete-overlay", "vx1"), ("reconcile", "vx1"),
                                  ("create-overlay", "-s", "files", "-v", "1", "vx1")])
def test_daemon_not_running_no_socket(capsys, short_dir, args):
    path = short_dir / "absent.sock"
    rc = main(["--socket", str(path), *args])
    out, err = capsys.readouterr()
    _assert_unreachable(rc, out, err, args[0], path)


def test_daemon_not_running_stale_socket(capsys, short_dir):
    path = short_dir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    rc = main(["--socket", str(path), "show-overlay", "-f"])
    out, err = capsys.readouterr()
    _assert_unreachable(rc, out, err, "show-overlay", path)


# -- once bugs, now regressions ---------------------------------------------------------------------------------------
def test_delete_overlay_name_with_hash_does_not_delete_another(varpd, admin):
    rc, out, err = varpd("delete-overlay", "vx23#x")
    assert "vx23" in [o.name for o in admin.service.overlays()]
    assert admin.service.deleted == []
    assert (rc, err) == (1, "varpd: delete-overlay: overlay 'vx23#x' not found\n")


def test_show_overlay_name_with_question_mark(varpd):
    assert varpd("show-overlay", "-f", "vx23?x") == (1, "", "varpd: show-overlay: overlay 'vx23?x' not found\n")


@pytest.mark.parametrize("args, words", [
    (("show-overlay", ".."), "not found"),
    (("create-overlay", "-s", "files", "-v", "9", "-p", "files/config=" + "x" * 70_000, "vx9"), "too large"),
])
def test_non_json_error_answer_is_reported_as_the_http_error(varpd, args, words):
    rc, out, err = varpd(*args)
    assert rc == 1 and out == ""
    msg = _one_error_line(err, args[0])
    assert "JSONDecodeError" not in msg and "bad answer" not in msg
    assert words in msg.lower()
