"""Figure 13: the etcd backend at scale (issue #14 item 3): 10k / 100k / 1M records in a real etcd.

A namespace of its own (`vb-<pid>t`: lo, a veth underlay at 192.0.2.1) holds a Debian etcd
(/usr/bin/etcd on 127.0.0.1, data in a tmp dir) and one `varpd daemon` (search=etcd, push mode,
safety pass an hour away) reading /varpd/23/.  The records are fig9's (`_scale._records`: arp and
ndp each, 1 FDB + 2 neighbour entries per record), one key each, loaded before the daemon starts by
a helper in the namespace (`python3 -m bench._scale_etcd load`: transactions of 1000 puts, 4 in
flight; its time is in the notes).

- time to ready: process start → /v1/health ready with every entry programmed (counters checked),
  against the baseline of a plain aetcd `get_prefix` of the same keys (one range, the values left as
  bytes: what reading the keys costs before varpd does anything with them), run by the helper
  (`range`) in the same namespace just before the daemon.  The daemon's own etcd read (start →
  its `event=loaded` log line) is in the notes: the rest of the time is programming the kernel.
- loop stalls while it loads: a thread of this process asks GET /v1/health every 10 ms from the
  daemon's start to ready; the figure is the p99 and the max of those answers' latency (an answer
  can wait only for the event loop) up to the backend's `event=loaded` (the etcd read: what the
  backend owns), against the same poll of the idle ready daemon; the same from there to ready
  (programming the kernel, the daemon's part) is in the notes.
- RSS (VmRSS) of the ready daemon, 2 s after ready; the peak (VmHWM) in the notes.

Growth is fitted as in `_scale.growth` over every size measured.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from varpd.lab.topology import http_get, varpd_bin

from ._common import PREFIX, Result, mkdtemp, nsrun, percentile, run
from ._scale import LOCAL, _make_ns, growth, size_label

ETCD = "/usr/bin/etcd"
PORT = 2379
KEY_PREFIX = "/varpd/23/"
TXN = 1000  # puts per transaction of the loader
IN_FLIGHT = 4
POLL = 0.010  # s between health requests while the daemon loads
TICKS = os.sysconf("SC_CLK_TCK")


# -- the helper, run inside the namespace -----------------------------------------------------
async def _load(endpoint: str, n: int) -> dict:
    import aetcd
    from aetcd import rpc

    from ._scale import _records

    host, port = endpoint.rsplit(":", 1)
    client = aetcd.Client(host, int(port), options={"grpc.max_receive_message_length": 1 << 30})
    await client.connect()
    records = _records(1, n)
    items = [(f"{KEY_PREFIX}{mac}".encode(), json.dumps(body, sort_keys=True).encode())
             for mac, body in records.items()]
    del records
    queue = [items[i:i + TXN] for i in range(0, len(items), TXN)]
    t0 = time.perf_counter()

    async def worker() -> None:
        while queue:
            batch = queue.pop()
            req = rpc.TxnRequest(success=[rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=v))
                                          for k, v in batch])
            await client.kvstub.Txn(req, timeout=120)

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    took = time.perf_counter() - t0
    await client.close()
    return {"load_s": took, "keys": len(items)}


async def _range(endpoint: str) -> dict:
    import aetcd

    host, port = endpoint.rsplit(":", 1)
    client = aetcd.Client(host, int(port), timeout=600, options={"grpc.max_receive_message_length": 1 << 30})
    await client.connect()
    t0 = time.perf_counter()
    resp = await client.get_prefix(KEY_PREFIX.encode())
    took = time.perf_counter() - t0
    count = len(resp)
    await client.close()
    return {"range_s": took, "keys": count}


def _helper(ns: str, *args: str, timeout: float = 1800) -> dict:
    res = nsrun(ns, sys.executable, "-m", "bench._scale_etcd", *args, timeout=timeout)
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- the namespace, etcd and the daemon ---------------------------------------------------------
def _start_etcd(ns: str, tmp: Path) -> subprocess.Popen:
    url, peer = f"http://127.0.0.1:{PORT}", "http://127.0.0.1:2380"
    log = open(tmp / "etcd.log", "ab")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, ETCD, "--data-dir", str(tmp / "etcd"), "--listen-client-urls", url,
         "--advertise-client-urls", url, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", f"default={peer}", "--quota-backend-bytes", str(8 << 30),
         "--max-txn-ops", str(TXN), "--max-request-bytes", str(16 << 20), "--log-level", "warn", "--logger", "zap"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while nsrun(ns, "etcdctl", f"--endpoints={url}", "endpoint", "health", check=False).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"etcd did not start: {(tmp / 'etcd.log').read_text()[-800:]}")
        time.sleep(0.2)
    return proc


def _config(tmp: Path) -> Path:
    path = tmp / "varpd.toml"
    path.write_text("\n".join([
        "[daemon]", f'state_dir = "{tmp / "state"}"', f'socket = "{tmp / "varpd.sock"}"',
        "reconcile_interval = 3600.0", 'log_level = "info"', "",
        "[[overlays]]", 'name = "vxt"', "vni = 23", 'search = "etcd"', 'mode = "push"',
        "[overlays.properties]", f'"vxlan/listen_ip" = "{LOCAL}"', f'"etcd/endpoints" = "127.0.0.1:{PORT}"',
        '"etcd/timeout" = 60', ""]))
    (tmp / "state").mkdir(exist_ok=True)
    return path


def _status(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


class _Poller(threading.Thread):
    """GET /v1/health every POLL s: (seconds since start, latency s, ready?) of each answer."""

    def __init__(self, sock: Path, t0: float) -> None:
        super().__init__(daemon=True)
        self.sock, self.t0, self.samples, self.halt = sock, t0, [], threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            t = time.perf_counter()
            try:
                status, body = http_get(self.sock, "/v1/health", timeout=30.0)
                ready = status == 200 and isinstance(body, dict) and body.get("ready") is True
                self.samples.append((t - self.t0, time.perf_counter() - t, ready))
            except OSError:
                pass  # not listening yet
            self.halt.wait(max(0.0, POLL - (time.perf_counter() - t)))


def _measure_daemon(ns: str, tmp: Path, n: int) -> dict:
    t0 = time.perf_counter()
    logf = open(tmp / "varpd.log", "ab")
    proc = subprocess.Popen(["ip", "netns", "exec", ns, varpd_bin(), "daemon", "--config", str(_config(tmp))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    loaded: list[float] = []

    def follow() -> None:
        for line in proc.stdout:
            if b"event=loaded" in line and not loaded:
                loaded.append(time.perf_counter() - t0)
            logf.write(line)
        logf.close()

    threading.Thread(target=follow, daemon=True).start()
    poller = _Poller(tmp / "varpd.sock", t0)
    poller.start()
    try:
        deadline = time.monotonic() + 120 + n / 2000
        while not (poller.samples and poller.samples[-1][2]):
            if proc.poll() is not None:
                raise RuntimeError(f"varpd exited {proc.returncode}: {(tmp / 'varpd.log').read_text()[-800:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"varpd not ready: {(tmp / 'varpd.log').read_text()[-800:]}")
            time.sleep(0.05)
        ready = time.perf_counter() - t0
        loading = [lat for _, lat, ok in poller.samples if not ok]
        # the backend's own part: start → its event=loaded line (the rest is programming the kernel)
        end = loaded[0] if loaded else ready
        reading = [lat for t, lat, ok in poller.samples if not ok and t + lat <= end]
        _, body = http_get(tmp / "varpd.sock", "/v1/overlays/vxt", timeout=60.0)
        c = body.get("counters", {}) if isinstance(body, dict) else {}
        if c.get("fdb_programmed") != n or c.get("neigh_programmed") != 2 * n or c.get("program_errors"):
            raise RuntimeError(f"{n} records: counters {c}")
        time.sleep(2)
        rss, hwm = _status(proc.pid, "VmRSS"), _status(proc.pid, "VmHWM")
        mark = len(poller.samples)
        time.sleep(3)
        idle = [lat for _, lat, _ in poller.samples[mark:]]
    finally:
        poller.halt.set()
        proc.terminate()
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return {"ready": ready, "loaded": loaded[0] if loaded else None, "rss": rss, "hwm": hwm,
            "stall_p99": percentile(loading, 99) if loading else None, "stall_max": max(loading, default=None),
            "read_p99": percentile(reading, 99) if reading else None, "read_max": max(reading, default=None),
            "read_polls": len(reading), "polls": len(loading), "idle_p99": percentile(idle, 99), "idle_max": max(idle, default=None),
            "worst": sorted(((round(lat, 3), round(t, 2)) for t, lat, ok in poller.samples if not ok),
                            reverse=True)[:5]}


def measure(n: int, ns: str) -> dict:
    """One size: etcd filled with n records, the baseline range, the daemon."""
    _make_ns(ns)
    etcd = None
    try:
        tmp = Path(mkdtemp(prefix="vb-scale-etcd-"))
        etcd = _start_etcd(ns, tmp)
        endpoint = f"127.0.0.1:{PORT}"
        row = {"n": n, **_helper(ns, "load", endpoint, str(n))}
        row.update(_helper(ns, "range", endpoint))
        if row["keys"] != n:
            raise RuntimeError(f"etcd holds {row['keys']} keys, not {n}")
        row.update(_measure_daemon(ns, tmp, n))
        return row
    finally:
        if etcd is not None:
            etcd.terminate()
            try:
                etcd.wait(30)
            except subprocess.TimeoutExpired:
                etcd.kill()
        run("ip", "netns", "del", ns, check=False)


def bench_scale_etcd(sizes: list[int], ns: str | None = None) -> list[Result]:
    rows = []
    for n in sizes:
        rows.append(measure(n, ns or f"{PREFIX}t"))
        print(f"# fig13 {n}: {rows[-1]}", file=sys.stderr, flush=True)
    ns_ = [r["n"] for r in rows]
    k_ready, k_base = growth(ns_, [r["ready"] for r in rows]), growth(ns_, [r["range_s"] for r in rows])
    k_rss = growth(ns_, [r["rss"] for r in rows])
    out = []
    for r in rows:
        n, label = r["n"], size_label(r["n"])
        loaded = f"{r['loaded']:.2f} s" if r["loaded"] is not None else "?"
        out.append(Result(
            figure=f"etcd: start -> every entry programmed, {label} records", value=round(r["ready"], 2), unit="s",
            baseline=round(r["range_s"], 2), baseline_name="plain aetcd get_prefix", target="(info)", passed=None,
            notes=f"growth k={k_ready} (range k={k_base}); varpd's own etcd read done at {loaded}; "
                  f"loading etcd took {r['load_s']:.1f} s", extra=r))
        out.append(Result(
            figure=f"etcd: RSS, {label} records (ready, idle)", value=round(r["rss"] / 1e6, 1), unit="MB",
            target="<= 500 MB at 1M" if n >= 1_000_000 else "(info)",
            passed=(r["rss"] <= 500e6) if n >= 1_000_000 else None,
            notes=f"{r['rss'] / n:.0f} B/record; growth k={k_rss}; peak (VmHWM) {r['hwm'] / 1e6:.0f} MB", extra=r))
        if r["read_max"] is not None:
            out.append(Result(
                figure=f"etcd: GET /v1/health while {label} records are read, p99 (max)",
                value=round(1000 * r["read_p99"], 1), unit="ms", baseline=round(1000 * r["idle_p99"], 1),
                baseline_name="same poll, idle daemon", target="max < 100 ms" if n >= 100_000 else "(info)",
                passed=(r["read_max"] < 0.1) if n >= 100_000 else None,
                notes=f"max {1000 * r['read_max']:.0f} ms over {r['read_polls']} requests up to the backend's "
                      f"event=loaded; while the kernel is then programmed: p99 {1000 * r['stall_p99']:.0f} ms, "
                      f"max {1000 * r['stall_max']:.0f} ms", extra=r))
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "load":
        print(json.dumps(asyncio.run(_load(sys.argv[2], int(sys.argv[3])))))
    elif len(sys.argv) == 3 and sys.argv[1] == "range":
        print(json.dumps(asyncio.run(_range(sys.argv[2]))))
    elif len(sys.argv) >= 3 and sys.argv[1] == "measure":  # by hand: measure N[,N...] [NAMESPACE]
        from ._common import install_cleanup
        install_cleanup()
        for size in sys.argv[2].split(","):
            print(json.dumps(measure(int(size), sys.argv[3] if len(sys.argv) > 3 else f"{PREFIX}t")), flush=True)
    else:
        sys.exit("usage: python3 -m bench._scale_etcd load HOST:PORT N | range HOST:PORT | measure N[,N] [NS]")
