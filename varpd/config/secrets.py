"""Secrets kept in files (bearer tokens), read the same way by every component that takes one."""

from __future__ import annotations

from pathlib import Path


def read_token_file(path: str | Path) -> str:
    """The token in `path`, surrounding whitespace removed; ValueError saying why if it cannot be used.

    An empty token is refused rather than sent (or accepted) as "no authentication".
    """
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror or exc}") from None
    if not token:
        raise ValueError("empty")
    return token
