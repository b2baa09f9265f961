"""json.loads for input from the network or from files: too deep a nesting is a JSON error, not a crash.

The stdlib parser recurses once per `[`/`{` and raises RecursionError (not ValueError) on
about a thousand levels, which 2 KiB of `[` reach: every reader of untrusted JSON that
catches ValueError/JSONDecodeError would otherwise let it escape (a 500 from the lookup
API, a traceback per reconnection of the http events stream).
"""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """json.loads (with its keyword arguments), raising json.JSONDecodeError for nesting too deep to parse."""
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        doc = text.decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else text
        raise json.JSONDecodeError("nested too deeply", doc, 0) from None
