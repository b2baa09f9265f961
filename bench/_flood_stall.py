"""Figure 14: the event loop while a flooding overlay (vxlan/flood = replicate) holds many records.

One lab host (`vb-<pid>l-*`), a push-mode `varpd daemon` (files backend, bridge br0,
reconcile_interval 3600 s) whose N records (FDB + one neighbour entry each) live behind 250
remote VTEPs (192.0.2.2-251): a flood list of 250 all-zeros entries. While this process asks
`GET /v1/health` one request after another (10 ms apart), the daemon:
- starts and loads its mapping (process start -> ready);
- runs a full pass (`POST .../reconcile`);
- applies one hosts.json edit (one record moved to another VTEP: a mapping change, and the
  flood list's sync after it).
The figure is the longest answer of each phase (and its p99), against the same requests to
the idle daemon just before: a stalled loop answers nothing, so the longest answer is the
longest stall a request saw. `GET /v1/overlays/vx23` (which shows the flood list) is timed
once, idle, for information.
"""
from __future__ import annotations

import json
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path

from varpd.lab.topology import HostSpec, Lab, http_get, http_request, write_atomic, write_varpd_config

from ._common import PREFIX, Result, mkdtemp, percentile

VX, BR = "vx23", "br0"
HOST = HostSpec("host1", "192.0.2.1", "de:ad:be:ef:00:00", "10.55.55.2", "fe80::3")
VTEPS = 250
PROBE_GAP = 0.010  # s between two probes


def _records(n: int) -> dict:
    return {f"02:7a:{i >> 24 & 255:02x}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}":
            {"arp": str(IPv4Address("10.64.0.0") + i + 1), "ip": f"192.0.2.{2 + i % VTEPS}", "port": 4789}
            for i in range(n)}


class _Probe:
    """GET /v1/health every PROBE_GAP s in a thread; `phase(name)` files later answers under name."""

    def __init__(self, sock: Path) -> None:
        self.sock, self.name = sock, "idle"
        self.samples: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            name, t0 = self.name, time.perf_counter()
            try:
                http_get(self.sock, "/v1/health", timeout=60.0)
            except OSError:  # not listening yet (start)
                time.sleep(PROBE_GAP)
                continue
            self.samples.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
            time.sleep(PROBE_GAP)

    def start(self) -> _Probe:
        self._thread.start()
        return self

    def phase(self, name: str) -> None:
        self.name = name

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(70)


def _wait_counter(sock: Path, key: str, at_least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = http_get(sock, f"/v1/overlays/{VX}", timeout=60.0)
        if status == 200 and body.get("counters", {}).get(key, 0) >= at_least:
            return
        time.sleep(0.05)
    raise RuntimeError(f"counter {key} did not reach {at_least} in {timeout} s")


def measure(n: int, full_pass: bool = True) -> dict:
    """The phases' probe latencies (ms) for one daemon with n records; without `full_pass` the
    explicit pass is left out (at 1M its two FDB dumps are many minutes of kernel time)."""
    lab = Lab([HOST], prefix=f"{PREFIX}l-")
    tmp = Path(mkdtemp(prefix="vb-floodstall-"))
    records = _records(n)
    try:
        lab.up()
        hosts = tmp / "hosts.json"
        write_atomic(hosts, json.dumps(records) + "\n")
        (tmp / "state").mkdir()
        cfg = write_varpd_config(tmp / "varpd.toml", HOST, hosts_json=hosts, state_dir=tmp / "state",
                                 sock=tmp / "varpd.sock", mode="push", overlay=VX, bridge=BR,
                                 reconcile_interval=3600.0, log_level="info",
                                 properties={"vxlan/flood": "replicate"})
        sock = tmp / "varpd.sock"
        probe = _Probe(sock).start()
        try:
            probe.phase("start")
            t0 = time.perf_counter()
            lab.start_varpd(HOST, cfg)
            lab.wait_ready(HOST, timeout=600 + n / 200)
            ready = time.perf_counter() - t0
            probe.phase("settle")
            time.sleep(2)
            probe.phase("idle")
            time.sleep(3)
            probe.phase("show")  # (not the idle baseline: before the VTEPs were counted it stalled the loop)
            t0 = time.perf_counter()
            status, body = http_get(sock, f"/v1/overlays/{VX}", timeout=120.0)
            show_ms = (time.perf_counter() - t0) * 1000
            flood = len(body.get("flood") or []) if status == 200 else None
            pass_s = float("nan")
            if full_pass:
                probe.phase("pass")
                t0 = time.perf_counter()
                status, summary = http_request(sock, "POST", f"/v1/overlays/{VX}/reconcile", timeout=3600)
                pass_s = time.perf_counter() - t0
                if status != 200:
                    raise RuntimeError(f"reconcile: HTTP {status} {summary}")
            probe.phase("settle")
            time.sleep(1)
            before = http_get(sock, f"/v1/overlays/{VX}", timeout=120.0)[1]["counters"].get("mapping_changes", 0)
            mac = next(iter(records))
            records[mac] = dict(records[mac], ip="192.0.2.252")  # a VTEP of its own: the flood list grows
            probe.phase("edit")
            t0 = time.perf_counter()
            write_atomic(hosts, json.dumps(records) + "\n")
            _wait_counter(sock, "mapping_changes", before + 1, 600)
            time.sleep(1.0)  # the change's programming and the flood list's sync after it
            edit_s = time.perf_counter() - t0
            status, body = http_get(sock, f"/v1/overlays/{VX}", timeout=120.0)
            flood_after = len(body.get("flood") or []) if status == 200 else None
        finally:
            probe.stop()
    finally:
        lab.down()
    return {"n": n, "ready": ready, "pass_s": pass_s, "edit_s": edit_s, "show_ms": show_ms, "flood": flood,
            "flood_after": flood_after, "samples": probe.samples}


def bench_flood_stall(sizes: list[int], pass_up_to: int = 100_000) -> list[Result]:
    out = []
    for n in sizes:
        r = measure(n, full_pass=n <= pass_up_to)
        s = r["samples"]
        idle = s.get("idle", [0.0])
        for phase, what in (("start", "start and mapping load"), ("pass", "a full pass"),
                            ("edit", "one hosts.json edit")):
            got = s.get(phase)
            if not got:
                continue
            out.append(Result(
                figure=f"flood=replicate, {n:,} records / {VTEPS} VTEPs: longest admin answer during {what}",
                value=round(max(got), 1), unit="ms", baseline=round(max(idle), 1),
                baseline_name="longest, daemon idle", target="(info)", passed=None,
                notes=f"p99 {percentile(got, 99):.1f} ms over {len(got)} requests (idle p99 "
                      f"{percentile(idle, 99):.1f}); ready {r['ready']:.1f} s, pass {r['pass_s']:.1f} s; "
                      f"show-overlay {r['show_ms']:.0f} ms; flood list {r['flood']} -> {r['flood_after']}",
                extra={k: v for k, v in r.items() if k != "samples"} | {"ms": got}))
    return out


if __name__ == "__main__":
    import sys

    from ._common import install_cleanup

    install_cleanup()
    for res in bench_flood_stall([int(x) for x in (sys.argv[1:] or ["100000"])]):
        print(json.dumps({k: v for k, v in res.to_json().items() if k != "extra"}))
        print(f"#   {res.extra.get('ms') and sorted(res.extra['ms'])[-5:]}")
