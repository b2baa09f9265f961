"""Profile the daemon's miss path: figure 2's daemon pass with `varpd daemon` under cProfile.

    python3 -m bench._profile_miss [N]    → prints the top functions (cumulative and own time)
Not part of run.py: cProfile slows the daemon, so its latencies are not figures.
"""
import os
import pstats
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from bench._common import install_cleanup
from bench import _miss


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    install_cleanup()
    tmp = Path(tempfile.mkdtemp(prefix="vb-prof-"))
    out = tmp / "daemon.prof"
    wrapper = tmp / "varpd-prof"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m cProfile -o {out} {shutil.which('varpd')} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    os.environ["VARPD_BIN"] = str(wrapper)
    for r in _miss.bench_miss(n):
        print(r.figure, r.value, r.baseline)
    st = pstats.Stats(str(out))
    st.sort_stats("cumulative").print_stats(35)
    st.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
