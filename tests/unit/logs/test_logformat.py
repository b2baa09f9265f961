"""The daemon's log formats: kv (today's text) and json (one object per line, fields from key=value)."""
from __future__ import annotations

import json
import logging

import pytest

from varpd.logformat import JsonFormatter, make_formatter, parse_message


def _record(msg, *args, level=logging.INFO, name="varpd.daemon.overlay", exc_info=None):
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def _json(msg, *args, **kw) -> dict:
    line = JsonFormatter().format(_record(msg, *args, **kw))
    assert "\n" not in line
    return json.loads(line)


def test_fields_come_from_the_format_string_and_keep_spaces_and_numbers():
    out = _json("overlay=%s event=status status=%s details=%s", "vx23", "DEGRADED", "files: cannot read x.json")
    assert out["level"] == "info" and out["logger"] == "varpd.daemon.overlay" and out["ts"].endswith("+00:00")
    assert out["event"] == "status"
    assert out["overlay"] == "vx23" and out["status"] == "DEGRADED" and out["details"] == "files: cannot read x.json"
    assert "msg" not in out
    out = _json("overlay=%s event=started vni=%d mode=%s plugin=%s ifindex=%d", "vx23", 23, "push", "files", 7)
    assert out["vni"] == 23 and out["ifindex"] == 7 and isinstance(out["vni"], int)


def test_prose_after_the_fields_and_compound_values():
    out = _json("svp=%s event=unreachable error=%s; lookups answered as unknown, retrying in %.1fs",
                "192.0.2.9:1296", "Connection refused", 2.0)
    assert out["svp"] == "192.0.2.9:1296" and out["error"] == "Connection refused"
    assert out["msg"] == "lookups answered as unknown, retrying in 2.0s"
    out = _json("svp=%s:%d event=connected peer=%s", "192.0.2.9", 1296, "192.0.2.9")
    assert out["svp"] == "192.0.2.9:1296"
    out = _json("etcd=%s event=reachable-again outage=%.1fs records=%d", "http://[::1]:2379", 3.25, 4)
    assert out["outage"] == "3.2s" and out["records"] == 4


def test_a_placeholder_holding_key_value_pairs_is_split():
    out = _json("overlay=%s event=reconcile %s", "vx23", "fdb_added=1 neigh_removed=2")
    assert out["event"] == "reconcile" and out["fdb_added"] == "1" and out["neigh_removed"] == "2"


def test_free_text_and_repr_go_to_msg():
    out = _json("overlay=%s task failed: %r", "vx23", ValueError("a=b c"), level=logging.ERROR)
    assert out["level"] == "error" and out["overlay"] == "vx23" and out["event"] is None
    assert out["msg"] == "task failed: ValueError('a=b c')"
    assert _json("plugin %s failed to load", "nope")["msg"] == "plugin nope failed to load"


def test_reserved_names_are_not_overwritten_and_exceptions_stay_on_one_line():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys
        out = _json("event=x level=%s ts=1 msg=%s", "weird", "m", level=logging.ERROR, exc_info=sys.exc_info())
    assert out["level"] == "error" and out["level_"] == "weird" and out["ts_"] == "1" and out["msg_"] == "m"
    assert "RuntimeError: boom" in out["exc"]


def test_mismatched_or_mapping_arguments_fall_back_to_the_rendered_line():
    out = _json("event=odd a=%s%%", 5)
    assert out["a"] == "5%"
    rec = logging.LogRecord("varpd", logging.INFO, __file__, 1, "event=m k=%(k)s", ({"k": "v"},), None)
    assert json.loads(JsonFormatter().format(rec))["k"] == "v"
    with pytest.raises(ValueError):
        parse_message("a=%s b=%s", ("only one",))


def test_kv_is_todays_format_and_unknown_formats_are_refused():
    line = make_formatter("kv").format(_record("overlay=%s event=flushed", "vx23"))
    assert line.endswith(" level=INFO logger=varpd.daemon.overlay overlay=vx23 event=flushed")
    with pytest.raises(ValueError, match="log format 'xml'"):
        make_formatter("xml")


def test_other_libraries_messages_are_kept_whole():
    out = _json("yield %s", "Stats(qsize=0, delta=0)", name="pyroute2.netlink.core")
    assert out["msg"] == "yield Stats(qsize=0, delta=0)" and "delta" not in out and out["event"] is None
    assert _json("files=%s event=loaded records=%d", "/x", 2, name="varpd_plugins.files")["records"] == 2


def test_daemon_settings_take_a_log_format_and_the_daemon_command_a_flag():
    from pydantic import ValidationError

    from varpd.cli.main import build_parser
    from varpd.config.daemon import DaemonSettings

    assert DaemonSettings().log_format == "kv" and DaemonSettings(log_format="json").log_format == "json"
    with pytest.raises(ValidationError, match="log_format"):
        DaemonSettings(log_format="xml")
    assert build_parser().parse_args(["daemon", "--log-format", "json"]).log_format == "json"
    assert build_parser().parse_args(["daemon"]).log_format is None


@pytest.mark.parametrize("level,pyroute2_level", [("debug", logging.INFO), ("warning", logging.WARNING)])
def test_the_daemons_debug_level_leaves_pyroute2_at_info(level, pyroute2_level):
    from varpd.daemon.main import _setup_logging

    lib, root = logging.getLogger("pyroute2"), logging.getLogger()
    saved = lib.level, root.level, list(root.handlers)
    try:
        _setup_logging(level)
        assert lib.getEffectiveLevel() == pyroute2_level
    finally:
        lib.setLevel(saved[0])
        root.setLevel(saved[1])
        root.handlers[:] = saved[2]
