"""Hostile-input code run in a child Python under the memory cap of `_tshark.run_capped` (RLIMIT_AS) and a
time limit, so a regression fails the test (MemoryError, a timeout) instead of taking the machine down."""
from __future__ import annotations

import json
import subprocess
import textwrap

from _tshark import run_capped as _run_capped


def run_capped(code: str, timeout: float = 120.0) -> dict:
    """Run `code` (which must print one JSON object as its last line) under the cap; its object."""
    try:
        done = _run_capped(["-c", textwrap.dedent(code)], timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the capped child did not finish in {timeout} s (blocked?)") from None
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"capped child failed (rc {done.returncode}):\n{done.stderr[-3000:]}"
    return json.loads(lines[-1])
