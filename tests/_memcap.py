"""Run hostile-input code in a child Python under a memory cap (RLIMIT_AS) and a time limit, so a
regression fails the test (MemoryError, a timeout) instead of taking the machine down."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

GiB = 1 << 30
ROOT = Path(__file__).resolve().parents[1]

_PRELUDE = """\
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
"""


def run_capped(code: str, limit: int = GiB, timeout: float = 120.0) -> dict:
    """Run `code` (which must print one JSON object as its last line) under the cap; its object.

    Fails with the child's stderr when it dies, hangs past `timeout` or prints no JSON.
    """
    script = _PRELUDE.format(limit=limit) + textwrap.dedent(code)
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the capped child did not finish in {timeout} s (blocked?)") from None
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"capped child failed (rc {done.returncode}):\n{done.stderr[-3000:]}"
    return json.loads(lines[-1])
