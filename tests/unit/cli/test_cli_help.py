"""`varpd --help`, every subcommand's --help, and --version."""
from __future__ import annotations

import argparse

import pytest

import varpd
from varpd.cli.main import build_parser, main

MINE = ["daemon", "create-overlay", "delete-overlay", "show-overlay", "reconcile"]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_top_level_help_lists_every_command_and_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ["--socket", "--version", "VARPD_SOCKET", *MINE]:
        assert word in out


@pytest.mark.parametrize("command", MINE)
def test_command_help_explains_every_option(capsys, command):
    parser = _subparsers(build_parser())[command]
    assert parser.description
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for action in parser._actions:
        assert action.help, (command, action.dest)
        for opt in action.option_strings or [action.dest]:
            assert opt in out, (command, opt)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"varpd {varpd.__version__}\n"


def test_daemon_calls_run_with_the_overrides(monkeypatch):
    calls = []
    monkeypatch.setattr("varpd.daemon.main.run", lambda *a: calls.append(a) or 0)
    assert main(["daemon", "--config", "/etc/varpd/varpd.toml", "--socket", "/tmp/s", "--state-dir", "/tmp/d"]) == 0
    assert calls == [("/etc/varpd/varpd.toml", "/tmp/s", "/tmp/d")]
