"""Every `varpd` command line the README and varpd(8) show is accepted by the CLI as it is now: the
parser, and the checks a command makes before it talks to the daemon (-o fields of the view, -p
property lists, -s entries). A renamed option or a column that moved fails here, not for a reader."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from varpd.cli.main import build_parser
from varpd.cli.manpages import _EXAMPLES

ROOT = Path(__file__).resolve().parents[3]


def _sh_blocks(text: str) -> list[str]:
    """Logical lines (backslash continuations joined) of the ```sh blocks."""
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines += block.replace("\\\n", " ").splitlines()
    return lines


def _varpd_commands(line: str) -> list[list[str]]:
    """The argument vectors after each `varpd` (or …/bin/varpd) in a shell line; `…` marks an elided sketch."""
    words = shlex.split(line, comments=True)
    if "…" in words:
        return []
    if words[:2] == ["vagrant", "ssh"] and "-c" in words:
        return _varpd_commands(words[words.index("-c") + 1])
    out, current = [], None
    for word in words:
        if word in ("&&", ";", "|", "||"):
            current = None
        elif current is not None:
            current.append(word)
        elif word == "varpd" or word.endswith("/bin/varpd"):
            current = []
            out.append(current)
    return out


def _examples() -> list[tuple[str, list[str]]]:
    found = []
    for line in _sh_blocks((ROOT / "README.md").read_text()):
        found += [("README.md", argv) for argv in _varpd_commands(line)]
    for _what, cmds in _EXAMPLES:
        for line in " ".join(cmds).replace("\\ ", " ").split("varpd ")[1:]:
            found.append(("varpd(8)", shlex.split(line)))
    return found


EXAMPLES = _examples()


def test_the_docs_have_examples_to_check():
    assert sum(src == "README.md" for src, _ in EXAMPLES) > 25 and sum(src == "varpd(8)" for src, _ in EXAMPLES) >= 6


def _check(argv: list[str]) -> None:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`varpd {shlex.join(argv)}` is refused by the parser") from exc
    check = getattr(args, "check", None)
    if check is not None:
        check(args)
    if args.command == "lab" and args.verb == "exec" and args.cmd[:1] == ["varpd"]:
        _check(args.cmd[1:])


@pytest.mark.parametrize("source, argv", EXAMPLES, ids=[f"{s}: {' '.join(a)[:60]}" for s, a in EXAMPLES])
def test_documented_command_line_is_accepted(source, argv, capsys):
    _check(argv)


def test_a_stale_example_is_caught():
    """The example varpd(8) used to show: -p -o link,status without -f asks the property view for STATUS."""
    from varpd.cli.client import CliError
    with pytest.raises(CliError, match="unknown field 'status'"):
        _check(["show-overlay", "-p", "-o", "link,status"])
