"""Shared bench helpers: results, namespaces (always `vb-` and always removed), timing."""
from __future__ import annotations

import atexit
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "kmod-shim") not in sys.path:  # varpd_kmod is installed; this is only a fallback
    sys.path.append(str(ROOT))

from varpd.lab.topology import cleanup as _lab_cleanup  # noqa: E402

PREFIX = f"vb-{os.getpid()}"  # every namespace this run makes starts with this


@dataclass
class Result:
    figure: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    # ratio = value / baseline; target is checked by `check` (text for the table)
    target: str = ""
    passed: bool | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    def to_json(self) -> dict:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


def run(*cmd: str, check: bool = True, timeout: float = 60.0, input: str | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, input=input)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {(res.stderr or res.stdout).strip()[:500]}")
    return res


def nsrun(ns: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
    return run("ip", "netns", "exec", ns, *cmd, **kw)


def cleanup_all() -> None:
    """Remove every namespace of this run (processes in them are killed first)."""
    _lab_cleanup(PREFIX)
    _remove_tmpdirs()


_installed = False


def install_cleanup() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    atexit.register(cleanup_all)

    def on_signal(signum, _frame):
        cleanup_all()
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def median(values: list[float]) -> float:
    return statistics.median(values)


def now() -> float:
    return time.perf_counter()


_tmpdirs: list[str] = []


def mkdtemp(prefix: str) -> str:
    """A scratch directory removed by cleanup_all() (at exit, after each figure)."""
    import tempfile
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


def _remove_tmpdirs() -> None:
    import shutil
    while _tmpdirs:
        shutil.rmtree(_tmpdirs.pop(), ignore_errors=True)
