#!/usr/bin/env python3
"""varpd benchmarks: one command, one table, one JSON file.

    sudo python3 bench/run.py [--quick] [--json out.json] [--only fig1,fig2,...]

Every figure is measured against a baseline in the same run (see bench/_*.py for
how each is made).  Needs root (network namespaces), iproute2 and iperf3; fig12 also FRR,
gobgpd, grpcio-tools, tcpdump and tshark.
Namespaces are named `vb-<pid>…` and removed on exit, failure or signal.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import Result, cleanup_all, install_cleanup  # noqa: E402

FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9", "fig10", "fig11", "fig12",
           "fig13", "fig14")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(results: list[Result]) -> str:
    rows = [("figure", "value", "baseline", "ratio", "target", "result")]
    for r in results:
        verdict = {True: "PASS", False: "FAIL", None: "info"}[r.passed]
        base = f"{_fmt(r.baseline)} ({r.baseline_name})" if r.baseline_name else _fmt(r.baseline)
        rows.append((r.figure, f"{_fmt(r.value)} {r.unit}", base,
                     "-" if r.ratio is None else f"{r.ratio:.2f}", r.target, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def machine() -> dict:
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": model,
            "python": platform.python_version(),
            "iproute2": subprocess.run(["ip", "-V"], capture_output=True, text=True).stdout.strip()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and short runs (< 60 s): checks the script")
    ap.add_argument("--json", metavar="FILE", help="write every figure (with raw samples) to FILE")
    ap.add_argument("--only", metavar="LIST", help=f"comma-separated subset of {','.join(FIGURES)}")
    ap.add_argument("--records", metavar="N,N,...", default="10000,100000,1000000",
                    type=lambda v: [int(x) for x in v.split(",")], help="fig9's and fig13's mapping sizes (default 10k,100k,1M)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    only = set(args.only.split(",")) if args.only else set(FIGURES)
    q = args.quick
    install_cleanup()

    from bench import (_backends, _drift, _etcd, _evpn, _flood_stall, _iperf, _micro, _miss, _programming, _scale,
                       _scale_etcd)

    plan = [
        ("fig1", lambda: _programming.bench_programming(2000 if q else 10_000, 1 if q else 5)),
        ("fig2", lambda: _miss.bench_miss(100 if q else 1000)),
        ("fig3", lambda: _micro.bench_lookups(10_000, 100_000 if q else 1_000_000)),
        ("fig4", lambda: _micro.bench_hosts(20_000 if q else 100_000, 1 if q else 3)),
        ("fig5", lambda: _iperf.bench_iperf(2 if q else 6, 1 if q else 3)),
        ("fig6", lambda: _etcd.bench_etcd(10 if q else 50)),
        ("fig7", lambda: _backends.bench_backends(1000, 300 if q else 3000, 100_000 if q else 1_000_000, 1 if q else 3)),
        ("fig8", lambda: _drift.bench_drift(50 if q else 500) + _drift.bench_full_pass(5000 if q else 100_000)),
        ("fig9", lambda: _scale.bench_records([1000, 10_000] if q else args.records, 3 if q else 20)),
        ("fig10", lambda: _scale.bench_overlays([1, 20] if q else [1, 100, 1000], 3 if q else 20)),
        ("fig11", lambda: _scale.bench_edit(10 if q else 100)),
        ("fig12", lambda: _evpn.bench_evpn(30 if q else 200, 2000 if q else 10_000)),
        ("fig13", lambda: _scale_etcd.bench_scale_etcd([1000, 10_000] if q else args.records)),
        # 1M: python3 -m bench._flood_stall 1000000 (start and edit only; ~10 min)
        ("fig14", lambda: _flood_stall.bench_flood_stall([10_000] if q else [100_000])),
    ]
    results: list[Result] = []
    errors: dict[str, str] = {}
    t_start = time.monotonic()
    for name, fn in plan:
        if name not in only:
            continue
        t0 = time.monotonic()
        print(f"# {name} ...", file=sys.stderr, flush=True)
        try:
            results += fn()
        except Exception as exc:  # one broken figure must not hide the others
            errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            results.append(Result(figure=f"{name}: ERROR {type(exc).__name__}: {str(exc)[:80]}",
                                  value=None, unit="", passed=False))
        finally:
            cleanup_all()
        print(f"# {name} done in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    info = machine()
    print(f"\nvarpd bench ({'quick' if q else 'full'}), kernel {info['kernel']}, {info['cpus']} CPUs "
          f"({info['cpu_model']}), Python {info['python']}, {time.monotonic() - t_start:.0f} s\n")
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "quick": q, "machine": info, "seconds": time.monotonic() - t_start,
            "errors": errors, "results": [r.to_json() for r in results]}, indent=2) + "\n")
    failed = [r for r in results if r.passed is False]
    return 1 if errors else (3 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
