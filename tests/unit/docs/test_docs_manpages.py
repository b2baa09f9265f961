"""The manual pages: varpd(8) is generated from build_parser() and committed; varpd.toml(5) and
hosts.json(5) are hand-written and must name every field of the models they document."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from varpd.cli.main import build_parser
from varpd.cli.manpages import bold, esc, ital, render_varpd8
from varpd.config.daemon import DaemonConfig, DaemonSettings, OverlayConfig
from varpd.config.hosts import FIELDS, HostRecordModel
from varpd.daemon.overlay_props import DAEMON_PROPERTIES

ROOT = Path(__file__).resolve().parents[3]
MAN = ROOT / "man"
REGEN = "python3 -m varpd.cli.manpages > man/varpd.8"


def _walk(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, words + (name,))


def _entry(page: str, name: str) -> bool:
    """`name` has its own tagged paragraph: `.TP` then `.B name`."""
    return f".TP\n.B {esc(name)}\n" in page


def test_committed_varpd8_is_a_fresh_render():
    committed = (MAN / "varpd.8").read_text()
    assert committed == render_varpd8(build_parser()), f"man/varpd.8 is stale: regenerate it with `{REGEN}`"


def test_module_prints_the_page():
    res = subprocess.run([sys.executable, "-m", "varpd.cli.manpages"], capture_output=True, text=True,
                         cwd=ROOT, env=dict(os.environ, COLUMNS="40", VARPD_SOCKET="/elsewhere.sock"))
    assert res.returncode == 0, res.stderr
    assert res.stdout == render_varpd8(build_parser()), "the page must not depend on the terminal or environment"


def test_varpd8_mentions_every_command_and_option():
    page = (MAN / "varpd.8").read_text()
    plain = re.sub(r"\\f[BIRP]", "", page)  # without font changes, for the help texts
    commands = list(_walk(build_parser()))
    assert len(commands) > 5
    for words, parser in commands:
        if words:
            assert f'.SS "{esc(" ".join(("varpd", *words)))}"' in page, f"no section for varpd {' '.join(words)}"
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            if action.option_strings:
                for opt in action.option_strings:
                    assert bold(opt) in page, f"varpd {' '.join(words)}: option {opt} not in varpd.8"
            else:
                assert ital(action.metavar or action.dest) in page, \
                    f"varpd {' '.join(words)}: operand {action.metavar or action.dest} not in varpd.8"
            if action.help and action.help != argparse.SUPPRESS and "%(" not in action.help:
                assert esc(" ".join(action.help.split())) in plain, f"help of {action.dest} not in varpd.8"


def test_varpd8_has_the_usual_sections():
    page = (MAN / "varpd.8").read_text()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "FILES", "SEE ALSO"):
        assert f"\n.SH {section}\n" in page


def test_varpd_toml5_documents_every_setting():
    page = (MAN / "varpd.toml.5").read_text()
    for model in (DaemonConfig, DaemonSettings, OverlayConfig):
        for field in model.model_fields:
            assert field in page, f"varpd.toml.5 does not mention {model.__name__}.{field}"
    for field in (*DaemonSettings.model_fields, *OverlayConfig.model_fields):
        assert _entry(page, field), f"varpd.toml.5 has no entry (.TP/.B) for {field}"


def test_varpd_toml5_documents_daemon_and_builtin_backend_properties():
    from varpd_plugins.direct import DirectBackend
    from varpd_plugins.files import FilesBackend

    page = (MAN / "varpd.toml.5").read_text()
    for spec in (*DAEMON_PROPERTIES, *FilesBackend.properties, *DirectBackend.properties):
        assert _entry(page, spec.name), f"varpd.toml.5 has no entry for property {spec.name}"


def test_hosts_json5_documents_every_field():
    page = (MAN / "hosts.json.5").read_text()
    names = {(f.alias or name) for name, f in HostRecordModel.model_fields.items()}
    assert names == set(FIELDS)
    for name in names:
        assert _entry(page, name), f"hosts.json.5 has no entry for field {name}"


@pytest.mark.skipif(shutil.which("man") is None, reason="man(1) is not installed (Debian: man-db)")
@pytest.mark.parametrize("page", ["varpd.8", "varpd.toml.5", "hosts.json.5"])
def test_man_renders_without_warnings(page):
    res = subprocess.run(["man", "--warnings", "-l", str(MAN / page)], capture_output=True, text=True,
                         env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8"),
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "", f"man --warnings -l man/{page}:\n{res.stderr}"
    assert "NAME" in res.stdout and "SEE ALSO" in res.stdout
