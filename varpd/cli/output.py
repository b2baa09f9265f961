"""Rendering rows as aligned tables or dladm-style parseable lines (-p -o)."""

from __future__ import annotations

from typing import Iterable, Sequence

from varpd.cli.client import CliError


def pick_fields(requested: str | None, available: Sequence[str]) -> list[str]:
    """Columns asked with -o (case-insensitive, comma-separated), or all of them."""
    if not requested:
        return list(available)
    upper = {f.upper(): f for f in available}
    out = []
    for name in requested.split(","):
        key = name.strip().upper()
        if key not in upper:
            raise CliError(f"unknown field {name.strip()!r} (fields: {','.join(available)})")
        out.append(upper[key])
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def render(rows: Iterable[dict[str, str]], fields: list[str], parseable: bool) -> str:
    rows = [[str(r.get(f, "--")) for f in fields] for r in rows]
    if parseable:
        if len(fields) == 1:
            return "\n".join(r[0] for r in rows)
        return "\n".join(":".join(_escape(v) for v in r) for r in rows)
    widths = [max([len(f)] + [len(r[i]) for r in rows]) for i, f in enumerate(fields)]
    lines = ["  ".join(f.ljust(w) for f, w in zip(fields, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)
