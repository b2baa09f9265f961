"""Log line formats of the daemon: `kv` (key=value text, the default) and `json` (one object per line).

varpd's messages are written as `key=%s key=literal free text`, so the JSON
formatter reads the fields from the *format string* and its arguments rather
than from the rendered line: a value with spaces (an error message) stays one
field, `%d`/`%f` arguments stay numbers, and text that is not key=value (prose
after a `;`, a `%r` of an exception) goes to `msg`.  A message it cannot map
(mismatched arguments, a dict argument) falls back to splitting the rendered line.
Other libraries' loggers (asyncio, aiohttp, pyroute2) do not follow the convention:
their whole message is `msg`.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from typing import Any

FORMATS = ("kv", "json")
KV_FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
RESERVED = ("ts", "level", "logger", "event", "msg", "exc")
KV_LOGGERS = ("varpd", "varpd_plugins", "varpd_kmod")  # loggers whose messages are key=value

_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)=(.*)", re.S)
# one printf-style conversion (what logging's %-formatting accepts); %% is a literal percent
_CONV = re.compile(r"%(?:\([^)]*\))?[#0+ -]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")
_NUMERIC = set("diouxXeEfFgG")


def _conversions(text: str) -> list[str]:
    return [c for c in _CONV.findall(text) if c != "%%"]


def _split_rendered(text: str) -> tuple[dict[str, Any], list[str]]:
    """Fallback: `k=v` tokens (v up to the next blank) become fields, the rest free text."""
    fields: dict[str, Any] = {}
    prose: list[str] = []
    for token in text.split():
        m = _KEY.fullmatch(token)
        if m and m.group(1) not in fields:
            fields[m.group(1)] = m.group(2).rstrip(";,")
        else:
            prose.append(token)
    return fields, prose


def parse_message(template: str, args: tuple) -> tuple[dict[str, Any], list[str]]:
    """(fields, free-text words) of one log call, from its format string and arguments."""
    tokens = template.split()
    if sum(len(_conversions(t)) for t in tokens) != len(args):
        raise ValueError("arguments do not match the format string")
    fields: dict[str, Any] = {}
    prose: list[str] = []
    rest = list(args)
    for token in tokens:
        convs = _conversions(token)
        used, rest = tuple(rest[:len(convs)]), rest[len(convs):]
        m = _KEY.fullmatch(token)
        if m is None or m.group(1) in fields:
            rendered = token % used if convs else token.replace("%%", "%")
            words = rendered.split()
            if convs and words and all(_KEY.fullmatch(w) for w in words):
                # a placeholder holding `k=v k=v` (e.g. the reconcile summary)
                more, _ = _split_rendered(rendered)
                fields.update({k: v for k, v in more.items() if k not in fields})
            else:
                prose.append(rendered)
            continue
        key, value = m.group(1), m.group(2)
        if value.endswith(";") or value.endswith(","):  # `error=%s; prose follows`
            value = value[:-1]
        if convs == [value] and value[-1] in _NUMERIC and isinstance(used[0], (int, float)) \
                and not isinstance(used[0], bool):
            fields[key] = used[0]  # keep numbers numeric
        else:
            fields[key] = value % used if convs else value.replace("%%", "%")
    return fields, prose


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, the message's key=value fields, msg, exc."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name.split(".")[0] in KV_LOGGERS:
            fields, prose = self._fields(record)
        else:
            fields, prose = {}, [record.getMessage()]
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": fields.pop("event", None),
        }
        for key, value in fields.items():
            out[f"{key}_" if key in RESERVED else key] = value
        if prose:
            out["msg"] = " ".join(prose)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str)

    @staticmethod
    def _fields(record: logging.LogRecord) -> tuple[dict[str, Any], list[str]]:
        template = record.msg if isinstance(record.msg, str) else str(record.msg)
        try:
            if record.args and not isinstance(record.args, tuple):
                raise ValueError("mapping arguments")
            return parse_message(template, record.args or ())
        except (TypeError, ValueError):
            return _split_rendered(record.getMessage())


def make_formatter(kind: str) -> logging.Formatter:
    """The formatter for daemon.log_format / --log-format."""
    if kind == "json":
        return JsonFormatter()
    if kind == "kv":
        return logging.Formatter(KV_FORMAT)
    raise ValueError(f"log format {kind!r}: expected one of {', '.join(FORMATS)}")
