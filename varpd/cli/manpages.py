"""varpd(8), generated from the argparse parser so that the manual cannot drift from the CLI.

    python3 -m varpd.cli.manpages > man/varpd.8

Every command and option comes from ``build_parser()``: names, metavars, choices,
defaults and help texts.  Only the surrounding prose (description, files,
environment, examples) is written here.  ``tests/unit/docs`` checks that the
committed ``man/varpd.8`` equals a fresh render.  The output is deterministic:
no date, no terminal width, no environment.
"""

from __future__ import annotations

import argparse
import re
import sys

from varpd import __version__

_SUPPRESS = argparse.SUPPRESS


# -- roff ---------------------------------------------------------------------------------

def esc(text: str) -> str:
    """Escape text for roff: backslashes, hyphens (as \\-, copy-pastable), leading control characters."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def bold(text: str) -> str:
    return f"\\fB{esc(text)}\\fR"


def ital(text: str) -> str:
    return f"\\fI{esc(text)}\\fR"


def _text(paragraph: str) -> str:
    """A paragraph of prose: one line (roff fills it); `-x`/`--opt` words in bold."""
    paragraph = " ".join(paragraph.split())
    out = esc(paragraph)
    out = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", out)  # `varpd daemon` -> bold
    # options mentioned in prose, e.g. "-t" or "--ttl", in bold (after escaping: \-t, \-\-ttl)
    return re.sub(r"(?<![\w\\])((?:\\-){1,2}[A-Za-z][\w]*(?:\\-[\w]+)*)", r"\\fB\1\\fR", out)


# -- argparse ---------------------------------------------------------------------------------

def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _sub_helps(action: argparse._SubParsersAction) -> dict[str, str]:
    return {c.dest: c.help or "" for c in action._choices_actions}


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar)
    if action.choices is not None and not isinstance(action.choices, range):
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _opt_synopsis(action: argparse.Action) -> str:
    """`-f`, `-o FIELD,...`, `cmd ...` in roff, without brackets."""
    if action.option_strings:
        word = bold(action.option_strings[0])
        if _takes_value(action):
            word += " " + ital(_metavar(action))
        return word
    name = ital(_metavar(action))
    if action.nargs == argparse.REMAINDER:
        return f"{name} ..."
    if action.nargs in ("*", "+"):
        return f"{name} ..."
    return name


def _synopsis_words(parser: argparse.ArgumentParser) -> list[str]:
    """The synopsis of one (sub)command's own arguments, in parser order; mutually exclusive ones as [a | b]."""
    groups = {id(a): g for g in parser._mutually_exclusive_groups for a in g._group_actions}
    words, done = [], set()
    for action in parser._actions:
        if action.help == _SUPPRESS or isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if id(action) in done:
            continue
        group = groups.get(id(action))
        if group is not None:
            members = [a for a in group._group_actions if a.help != _SUPPRESS]
            done.update(id(a) for a in members)
            inner = " | ".join(_opt_synopsis(a) for a in members)
            words.append(f"({inner})" if group.required else f"[{inner}]")
            continue
        word = _opt_synopsis(action)
        optional = (not action.required) if action.option_strings else action.nargs in ("?", "*", argparse.REMAINDER)
        words.append(f"[{word}]" if optional else word)
    return words


def _default_note(action: argparse.Action, help_text: str) -> str:
    """'Default: X.' unless there is no meaningful default or the help already says it."""
    d = action.default
    if d in (None, False, True, [], (), _SUPPRESS) or isinstance(action, (argparse._HelpAction,
                                                                           argparse._VersionAction)):
        return ""
    if "default" in help_text.lower():
        return ""
    if isinstance(d, tuple):
        d = ":".join(map(str, d))
    return f"Default: {d}."


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%(" in text:
        params = dict(vars(action), prog=prog)
        for name in list(params):
            if params[name] is _SUPPRESS:
                del params[name]
        if params.get("choices") is not None:
            params["choices"] = ", ".join(map(str, params["choices"]))
        text = text % params
    text = text.strip()
    extra = []
    if action.choices is not None and not isinstance(action.choices, range) and action.option_strings:
        listed = ", ".join(map(str, action.choices))
        if not all(str(c) in text for c in action.choices):
            extra.append(f"One of: {listed}.")
    note = _default_note(action, text)
    if note:
        extra.append(note)
    if not text and not extra:
        text = "(no description)"
    if text and extra and not text.endswith("."):
        text += "."
    return " ".join([text, *extra]).strip()


def _options(parser: argparse.ArgumentParser, prog: str, *, with_help: bool = False) -> list[str]:
    """.TP entries: options first, then operands (positionals), as argparse lists them."""
    lines = []
    ordered = ([a for a in parser._actions if a.option_strings] + [a for a in parser._actions if not a.option_strings])
    for action in ordered:
        if action.help == _SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if isinstance(action, argparse._HelpAction) and not with_help:
            continue  # every command has -h, --help: said once, under OPTIONS
        if action.option_strings:
            head = ", ".join(bold(o) for o in action.option_strings)
            if _takes_value(action):
                head += " " + ital(_metavar(action))
        else:
            head = _opt_synopsis(action)
        lines += [".TP", head, _text(_help(action, prog))]
    return lines


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(argv words, parser, one-line help) of every subcommand, depth first, in parser order."""
    sub = _subparsers(parser)
    if sub is None:
        return
    helps = _sub_helps(sub)
    for name, child in sub.choices.items():
        yield prefix + (name,), child, helps.get(name, "")
        yield from _commands(child, prefix + (name,))


# -- the page ---------------------------------------------------------------------------------

_DESCRIPTION = [
    "One daemon per host creates and programs Linux VXLAN devices over netlink and keeps the kernel's "
    "forwarding database (FDB) and neighbour tables equal to what a pluggable lookup backend says: where "
    "does this MAC address, or this overlay IP address, live? ARP and NDP are answered by the kernel's VXLAN "
    "proxy from the neighbour entries varpd programs, so no broadcast or multicast leaves the host; DHCPv4 "
    "is proxied to a record's dhcp-proxy MAC or answered by varpd itself.",
    "An overlay is a VXLAN device with a virtual network id (VNI), a backend (the search plugin: files, "
    "direct, etcd, http, ...) and properties. It runs in one of three modes. push: the backend can list its "
    "mapping, and every remote entry is programmed before traffic and kept current from the backend's "
    "changes. on-demand: kernel misses are resolved as they come, through a cache with negative caching and a "
    "rate limit per destination. point: the direct backend sends everything to one VTEP. auto picks by backend. "
    "In every mode a reconciler compares the kernel's tables with the wanted state and applies only the "
    "difference: at start, when a device reappears, after lost kernel notifications and when the safety pass, "
    "every reconcile_interval seconds (default 900), finds a difference (for a push overlay it is a cheap "
    "check of counts and digests; other modes compare in full); in between, an entry someone else deletes or "
    "changes is put back within milliseconds from the kernel's own change notifications.",
    "varpd owns the tables of its VXLAN devices: the entries it programs carry its mark (neighbours proto 118, "
    "FDB entries extern_learn), and a marked entry the mapping does not ask for is removed; an entry someone "
    "else adds for a MAC or IP varpd does not want survives, one for a key it wants is replaced. On SIGTERM the daemon stops but leaves devices and entries in place; the next start adopts them "
    "and reconciles instead of flushing, so a restart does not disturb traffic.",
    "varpd daemon runs the daemon (see varpd.toml(5) for its configuration). The overlay commands are shaped "
    "like illumos dladm(8) and talk to the running daemon over its unix socket. Errors are one line on "
    "standard error and a non-zero exit status.",
]

_FILES = [
    ("/etc/varpd/varpd.toml", "the daemon's configuration (TOML, or YAML if named .yaml or .yml); see varpd.toml(5)."),
    ("/etc/varpd/hosts.json", "the mapping of the files backend (property files/config); see hosts.json(5)."),
    ("/var/lib/varpd", "saved overlays and VNICs (daemon.state_dir): overlays created with create-overlay "
                       "and VNICs created with create-vnic (vnics/NAME.json) come back after a restart."),
    ("/run/varpd/varpd.sock", "the control socket (daemon.socket) the other commands use."),
]

_EXAMPLES = [
    ("Create the seed's overlay on host zlan (192.0.2.1) with the files backend, and look at it:",
     ["varpd create-overlay -v 23 -e vxlan -s files -p vxlan/listen_ip=192.0.2.1 \\",
      "      -p files/config=/etc/varpd/hosts.json -b br-overlay0 overlay0",
      "varpd show-overlay -f",
      "varpd show-overlay -t overlay0",
      "varpd show-overlay -f -p -o link,status"]),
    ("Give a namespace guest a VNIC on overlay0 (its MAC pinned to the port; re-created after a reboot), "
     "a tap for a QEMU guest (-netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device "
     "virtio-net-pci,netdev=n0,mac=de:ad:be:ef:00:10), and list them:",
     ["varpd create-vnic -m de:ad:be:ef:00:00 -l overlay0 --netns guest \\",
      "      --address 10.55.55.2/24 --address fe80::2/64 vnic0",
      "varpd create-vnic --type tap -m de:ad:be:ef:00:10 -l overlay0 tap0",
      "varpd show-vnic -p -o link,over,macaddress,status",
      "varpd delete-vnic tap0"]),
    ("Run the daemon as systemd does:", ["varpd daemon --config /etc/varpd/varpd.toml"]),
    ("A three-host lab of network namespaces on this machine:",
     ["varpd lab up --hosts 3", "varpd lab exec host1-guest ping -c3 10.55.55.3", "varpd lab down"]),
]


def render_varpd8(parser: argparse.ArgumentParser) -> str:
    """The whole varpd(8) page in roff (man macros), from `parser` (``build_parser()``)."""
    prog = parser.prog
    out = [
        '.\\" Generated by varpd.cli.manpages from build_parser(); do not edit.',
        '.\\" Regenerate with: python3 -m varpd.cli.manpages > man/varpd.8',
        f'.TH VARPD 8 "" "varpd {esc(__version__)}" "System Manager\'s Manual"',
        ".nh",
        ".ad l",
        ".SH NAME",
        f"{esc(prog)} \\- {esc('overlay network control plane for Linux VXLAN, modelled on illumos varpd')}",
        ".SH SYNOPSIS",
    ]
    out += [".HP", " ".join([bold(prog), *_synopsis_words(parser), ital("COMMAND"), "[" + ital("ARGS") + "]"])]
    for words, child, _ in _commands(parser):
        if _subparsers(child) is not None:
            continue  # its verbs are listed instead
        parents, line = parser, [bold(prog)]
        for depth in range(len(words)):
            node = _subparsers(parents).choices[words[depth]]
            line.append(bold(words[depth]))
            if depth < len(words) - 1:
                line += _synopsis_words(node)
            parents = node
        line += _synopsis_words(child)
        out += [".HP", " ".join(line)]
    out += [".SH DESCRIPTION"]
    if parser.description:
        out += [".PP", _text(parser.description)]
    for para in _DESCRIPTION:
        out += [".PP", _text(para)]
    out += [".SH OPTIONS", _text("These come before the command. Every command also takes -h, --help."),
            *_options(parser, prog, with_help=True)]
    out += [".SH COMMANDS"]
    for words, child, one_line in _commands(parser):
        out += [f'.SS "{esc(" ".join((prog, *words)))}"']
        desc = child.description or one_line
        if desc:
            out += [".PP", _text(desc)]
        sub = _subparsers(child)
        if sub is not None:
            verbs = _sub_helps(sub)
            out += [".PP", _text(f"Verbs: {', '.join(sub.choices)}; each is described below.")]
            out += [x for name in sub.choices for x in (".TP", bold(name), _text(verbs.get(name, "")))]
        opts = _options(child, child.prog)
        if opts:
            out += [".PP", "Options and operands:", *opts]
    out += [".SH ENVIRONMENT", ".TP", bold("VARPD_SOCKET"),
            _text("the control socket the commands use when --socket is not given "
                  "(default /run/varpd/varpd.sock)."),
            ".SH FILES"]
    for path, what in _FILES:
        out += [".TP", ital(path), _text(what)]
    out += [".SH EXIT STATUS", _text("0 on success, 1 on an error (one line on standard error), "
                                     "2 on a usage error, 130 when interrupted."),
            ".SH EXAMPLES"]
    for what, cmds in _EXAMPLES:
        out += [".PP", _text(what), ".PP", ".nf", ".RS 4", *(esc(c) for c in cmds), ".RE", ".fi"]
    out += [".SH SEE ALSO",
            ", ".join(f"{bold(n)}({s})" for n, s in (("varpd.toml", 5), ("hosts.json", 5), ("ip-link", 8),
                                                       ("bridge", 8), ("systemd.exec", 5))),
            ".PP", _text("illumos dladm(8), varpd(8) and overlay_files(5), whose formats and commands "
                         "this varpd follows.")]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    from varpd.cli.main import build_parser

    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["varpd.8"]):
        print("usage: python3 -m varpd.cli.manpages [varpd.8] > man/varpd.8", file=sys.stderr)
        return 2
    sys.stdout.write(render_varpd8(build_parser()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
