"""`varpd --help`, every (nested) subcommand's --help, checked against build_parser() so they cannot
drift, and --version."""
from __future__ import annotations

import argparse
import re

import pytest

import varpd
from varpd.cli.main import build_parser, main

MINE = ["daemon", "create-overlay", "delete-overlay", "show-overlay", "reconcile"]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(argv prefix, parser) for the top level and every (nested) subcommand."""
    yield prefix, parser
    for name, sub in _subparsers(parser).items():
        yield from _commands(sub, prefix + (name,))


COMMANDS = list(_commands(build_parser()))
IDS = [" ".join(p) or "varpd" for p, _ in COMMANDS]


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_every_documented_command_exists():
    names = {p for p, _ in COMMANDS}
    for cmd in [*((c,) for c in MINE),
                ("lab",), ("lab", "up"), ("lab", "down"), ("lab", "status"), ("lab", "exec")]:
        assert cmd in names


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


@pytest.mark.parametrize("prefix, parser", COMMANDS, ids=IDS)
def test_help_exits_0_and_mentions_every_option(capsys, prefix, parser):
    with pytest.raises(SystemExit) as exc:
        main([*prefix, "--help"])
    assert exc.value.code in (0, None)
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("usage: " + " ".join(("varpd", *prefix)))
    checked = 0
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            words = list(action.choices)
        elif action.option_strings:
            words = list(action.option_strings)
        else:
            words = [action.metavar or action.dest]
        for word in words:
            assert _mentions(out, word), f"`varpd {' '.join(prefix)} --help` does not mention {word}"
            checked += 1
        if action.help and action.help is not argparse.SUPPRESS and not isinstance(action, argparse._HelpAction):
            # the first words of each option's help text are shown too (argparse may wrap the rest)
            first = " ".join(action.help.split()[:2]).split("%")[0].strip()
            assert " ".join(first.split()) in " ".join(out.split()), (word, first)
    assert checked >= 2  # at least -h and --help


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
