"""Config loading and bad files (issue #12 item 7, #11.14): each problem is one line naming the file and
the field, never an "unexpected error" or a hang; the hostile ones are read in a child capped at 1 GiB."""
from __future__ import annotations

import os

import pytest

from _memcap import run_capped
from varpd.backend.errors import ConfigError
from varpd.config.daemon import load_config
from varpd.daemon.main import run

OVERLAY = '[[overlays]]\nname = "vx23"\nvni = 23\nsearch = "direct"\n'

# the child: load_config of each path → its ConfigError line (None if it loaded)
LOAD_ALL = """
import json
from varpd.backend.errors import ConfigError
from varpd.config.daemon import load_config
out = {}
for path in %r:
    try:
        load_config(path)
        out[path] = None
    except ConfigError as exc:
        out[path] = str(exc)
print(json.dumps(out))
"""


def errors_capped(paths) -> dict[str, str | None]:
    return run_capped(LOAD_ALL % [str(p) for p in paths], timeout=120)


def err(path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}"), msg
    return msg


def test_hostile_files_are_one_line_errors_naming_the_file(tmp_path):
    files = {
        "deep.toml": "a = " + "[" * 100_000,
        "deep.yaml": "a: " + "[" * 100_000,
        "deep-block.yaml": "".join(" " * i + "a:\n" for i in range(3000)),
        "bigint.toml": "[daemon]\nreconcile_interval = " + "1" * 5000 + "\n",
        "bigint.yaml": "daemon:\n  reconcile_interval: " + "1" * 5000 + "\n",
    }
    paths = []
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        paths.append(tmp_path / name)
    (tmp_path / "latin1.toml").write_bytes(b'[daemon]\nlog_level = "d\xe9bug"\n')
    paths.append(tmp_path / "latin1.toml")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    paths += [fifo, "/dev/zero"]
    try:
        got = errors_capped(paths)
    finally:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # should a regression block on it
        except OSError:
            pass
    want = {
        "deep.toml": "invalid TOML: nested too deeply",
        "deep.yaml": "invalid YAML: nested too deeply",
        "deep-block.yaml": "invalid YAML: nested too deeply",
        "bigint.toml": "invalid TOML: Exceeds the limit (4300 digits) for integer string conversion",
        "bigint.yaml": "invalid YAML: Exceeds the limit (4300 digits) for integer string conversion",
        "latin1.toml": "not UTF-8 text (byte 23)",
        "fifo.toml": "not a regular file but a FIFO, device or socket",
    }
    for path in paths:
        msg = got[str(path)]
        assert msg is not None and "\n" not in msg and msg.startswith(f"{path}: "), (path, msg)
        assert want.get(os.path.basename(path), "not a regular file") in msg, (path, msg)


@pytest.mark.parametrize("field", ["reconcile_interval", "cache_ttl", "negative_ttl", "miss_rate_limit"])
@pytest.mark.parametrize("toml, yaml", [("inf", ".inf"), ("nan", ".nan"), ("1e999", "1e999")])
def test_infinite_intervals_and_ttls_are_refused(tmp_path, field, toml, yaml):
    t = tmp_path / "varpd.toml"
    t.write_text(f"[daemon]\n{field} = {toml}\n")
    assert err(t).startswith(f"{t}: daemon.{field}: Input should be a finite number")
    y = tmp_path / "varpd.yaml"
    y.write_text(f"daemon:\n  {field}: {yaml}\n")
    if yaml == "1e999":  # YAML 1.1 reads it as a string: refused as not a number
        assert f"daemon.{field}:" in err(y)
    else:
        assert err(y).startswith(f"{y}: daemon.{field}: Input should be a finite number")


def test_an_infinite_property_value_is_refused(tmp_path):
    t = tmp_path / "varpd.toml"
    t.write_text(OVERLAY + '[overlays.properties]\n"files/reload_interval" = inf\n')
    assert "overlays.0.properties.files/reload_interval" in err(t)


def test_yaml_duplicate_keys_are_refused_with_their_lines(tmp_path):
    y = tmp_path / "varpd.yaml"
    y.write_text("daemon:\n  log_level: info\n  log_level: debug\n")
    assert err(y) == f"{y}:3: duplicate key 'log_level' (first on line 2)"
    y.write_text("overlays:\n- name: vx23\n  vni: 23\n  search: direct\n  vni: 24\n")
    assert err(y) == f"{y}:5: duplicate key 'vni' (first on line 3)"
    y.write_text("daemon: {}\ndaemon: {}\n")
    assert err(y) == f"{y}:2: duplicate key 'daemon' (first on line 1)"


def test_yaml_merge_keys_still_work(tmp_path):
    y = tmp_path / "varpd.yaml"
    y.write_text("overlays:\n- &b {name: vx23, vni: 23, search: direct}\n- <<: *b\n  name: vx24\n  vni: 24\n")
    assert [o.name for o in load_config(y).overlays] == ["vx23", "vx24"]


def test_duplicate_overlay_names_are_refused(tmp_path):
    t = tmp_path / "varpd.toml"
    t.write_text(OVERLAY + OVERLAY.replace("vni = 23", "vni = 24"))
    assert err(t) == f"{t}: overlays: overlays 0 and 1 have the same name 'vx23'"
    y = tmp_path / "varpd.yaml"
    y.write_text("overlays:\n- {name: a, vni: 1, search: direct}\n- {name: a, vni: 2, search: direct}\n")
    assert err(y) == f"{y}: overlays: overlays 0 and 1 have the same name 'a'"


def test_a_state_dir_that_is_a_file_is_refused(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("")
    t = tmp_path / "varpd.toml"
    t.write_text(f'[daemon]\nstate_dir = "{plain}"\n')
    assert err(t) == f"{t}: daemon.state_dir: {plain} is not a directory"
    t.write_text(f'[daemon]\nstate_dir = "{plain}/sub"\n')  # a parent that is a file: mkdir would fail later
    assert err(t) == f"{t}: daemon.state_dir: {plain} is not a directory"
    t.write_text(f'[daemon]\nstate_dir = "{tmp_path}/new/dir"\n')  # not there yet: created at start
    assert load_config(t).daemon.state_dir == tmp_path / "new" / "dir"


def test_a_newline_or_a_huge_key_never_breaks_the_one_line(tmp_path):
    t = tmp_path / "varpd.toml"
    t.write_text('[daemon]\n"a\\nb" = 1\n"' + "k" * 100_000 + '" = 2\n')
    with pytest.raises(ConfigError) as info:
        load_config(t)
    assert len(info.value.lines) == 2
    for line in info.value.lines:
        assert "\n" not in line and line.startswith(f"{t}: daemon.") and len(line) < len(str(t)) + 200, line


def test_two_problems_print_two_lines(tmp_path, capsys):
    t = tmp_path / "varpd.toml"
    t.write_text('[daemon]\nlog_level = "loud"\ncache_ttl = -1\n')
    assert run(str(t)) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"varpd: daemon: {t}: daemon.log_level: Input should be 'debug', 'info', 'warning' or 'error'",
                     f"varpd: daemon: {t}: daemon.cache_ttl: Input should be greater than 0"]
    with pytest.raises(ConfigError) as info:
        load_config(t)
    assert "\n" not in str(info.value) and str(info.value) == "; ".join(info.value.lines)


def test_yaml_is_refused_as_soon_as_it_nests_deeper_than_any_config(tmp_path):
    """65 levels is no config: refused by the composer at that level, not by a RecursionError
    thousands of frames later (4 s for 3000 levels, minutes under tracemalloc)."""
    y = tmp_path / "varpd.yaml"
    y.write_text("a: " + "[" * 65 + "]" * 65 + "\n")
    assert err(y) == f"{y}: invalid YAML: nested too deeply"
    y.write_text("a: " + "[" * 60 + "]" * 60 + "\n")  # deep, but within the limit: the schema refuses it
    assert "nested too deeply" not in err(y)
