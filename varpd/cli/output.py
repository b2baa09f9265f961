"""Rendering rows as aligned tables or dladm-style parseable lines (-p -o).

The commands build rows (dicts keyed by upper-case field names); only this module formats them.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence

from varpd.cli.client import CliError

EMPTY = "--"  # dladm's mark for a field without a value


def pick_fields(requested: str | None, available: Sequence[str]) -> list[str]:
    """The columns asked with -o (comma-separated, case-insensitive, in the order given; `all` for
    every one), or all of them; an unknown name is an error naming it."""
    if not requested or requested.strip().lower() == "all":
        return list(available)
    by_upper = {f.upper(): f for f in available}
    fields = []
    for name in requested.split(","):
        key = name.strip().upper()
        if key not in by_upper:
            raise CliError(f"unknown field {name.strip()!r} (fields: {','.join(available).lower()})")
        fields.append(by_upper[key])
    return fields


def escape_parseable(value: str) -> str:
    """dladm's -p escaping: a ':' inside a value is `\\:` (and a backslash `\\\\`)."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _cell(value: object) -> str:
    return EMPTY if value is None or value == "" else str(value)


def render_table(rows: Iterable[Mapping[str, object]], fields: Sequence[str]) -> str:
    """Upper-case headers, columns left-aligned two spaces apart, no trailing blanks."""
    cells = [[_cell(r.get(f)) for f in fields] for r in rows]
    widths = [max([len(f)] + [len(r[i]) for r in cells]) for i, f in enumerate(fields)]
    lines = [[f.upper() for f in fields]] + cells
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)


def render_parseable(rows: Iterable[Mapping[str, object]], fields: Sequence[str]) -> str:
    """No header; fields joined by ':' with colons in values escaped. With a single field there is
    no separator and nothing is escaped (as dladm's ofmt)."""
    cells = [[_cell(r.get(f)) for f in fields] for r in rows]
    if len(fields) == 1:
        return "\n".join(r[0] for r in cells)
    return "\n".join(":".join(escape_parseable(v) for v in r) for r in cells)


def render(rows: Iterable[Mapping[str, object]], fields: Sequence[str], parseable: bool) -> str:
    return render_parseable(rows, fields) if parseable else render_table(rows, fields)


def add_output_options(p: argparse.ArgumentParser, fields_help: str = "") -> None:
    """-p and -o, as every show-* command has them."""
    p.add_argument("-p", "--parseable", action="store_true",
                   help="parseable output: no header, fields separated by ':', a ':' inside a value written "
                        "'\\:'; requires -o")
    p.add_argument("-o", "--output", metavar="FIELD,...",
                   help="the columns to print, in this order, case-insensitive (or 'all')" + fields_help)
