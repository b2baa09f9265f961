"""Figure 6: an etcd change → the FDB entry programmed on all 3 lab hosts (push mode).

Topology: a 3-host lab (`vb-<pid>e-*`, `seed_hosts(3)`), etcd in the underlay namespace at
192.0.2.254:2379 started as `varpd lab up --backend etcd` starts it (varpd/lab/backends.py,
server.py), each host's `varpd daemon` with search=etcd, mode=push and the lab's etcd
properties (vx23 on br0).

Before the first sample, `bridge monitor fdb` runs in each host namespace; one reader thread per
host timestamps (CLOCK_MONOTONIC) every line as it arrives.  A helper process in the underlay
namespace (`python3 -m bench._etcd helper`) holds one aetcd client that puts, and one plain aetcd
`watch_prefix` on /varpd/23/ (the baseline: what etcd itself takes to deliver the change to a
watcher).  For each of N new MACs, one at a time: the helper puts
/varpd/23/<mac> = {"ip": "192.0.2.9", "port": 4789} and reports when the put was issued (t0) and when it returned;
the sample is the last of the 3 hosts' monitor lines naming <mac> minus t0, the baseline the
watcher's event for <mac> minus t0.  t0 is when the put was issued: the
watch event reaches the watcher before the put's reply, so from the put *returning* the baseline
would be negative; the time from the put returning is kept in the JSON and the notes.  Timestamps from different processes are comparable (one
monotonic clock).  A sample that does not reach all 3 hosts in 2 s is counted lost.
"""
from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from varpd.lab.backends import BACKENDS, LabPaths
from varpd.lab.server import start_server, wait_server
from varpd.lab.topology import Lab, seed_hosts, write_hosts_json, write_varpd_config

from ._common import PREFIX, Result, mkdtemp, percentile

VX, BR = "vx23", "br0"
DEST = "192.0.2.9"  # no such host: only the kernel entry matters


def _mac(i: int) -> str:
    return f"02:79:00:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}:01"


# --- the helper, run in the underlay namespace ------------------------------------------------------
async def _helper(endpoint: str) -> None:
    import aetcd
    host, port = endpoint.rsplit(":", 1)
    putter, watcher = aetcd.Client(host, int(port)), aetcd.Client(host, int(port))
    await putter.connect()
    await watcher.connect()
    watch = await watcher.watch_prefix(b"/varpd/23/")

    async def follow():
        async for ev in watch:
            t = time.monotonic_ns()
            print(f"W {ev.kv.key.decode().rsplit('/', 1)[1]} {t}", flush=True)

    task = asyncio.create_task(follow())
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.strip():
            break
        mac, value = line.split(" ", 1)
        t_start = time.monotonic_ns()
        await putter.put(f"/varpd/23/{mac}".encode(), value.strip().encode())
        print(f"P {mac} {t_start} {time.monotonic_ns()}", flush=True)
    task.cancel()
    await putter.close()
    await watcher.close()


# --- the bench ----------------------------------------------------------------------------------
def _reader(name: str, stream, out: "queue.Queue[tuple[str, str, int]]") -> None:
    for line in stream:
        out.put((name, line, time.monotonic_ns()))


def bench_etcd(n: int, timeout: float = 2.0) -> list[Result]:
    hosts = seed_hosts(3)
    prefix = f"{PREFIX}e-"  # session_prefix("vb-", "e"): unique to this run, removed by cleanup_all()
    assert prefix.startswith("vb-")
    lab = Lab(hosts, prefix=prefix)
    tmp = Path(mkdtemp(prefix="vb-etcd-"))
    backend = BACKENDS["etcd"]
    if backend.missing():
        raise RuntimeError(backend.missing())
    hosts_json = tmp / "hosts.json"
    write_hosts_json(hosts_json, hosts)
    paths = LabPaths(workdir=tmp, hosts_json=hosts_json)
    events: "queue.Queue[tuple[str, str, int]]" = queue.Queue()
    server = helper = None
    totals, bases, per_host, after_ret, put_rtt, lost = [], [], [], [], [], 0
    try:
        lab.up()
        server, log = start_server(lab, backend, paths)
        lab._procs.append(server)  # killed by lab.down() (and with the namespace in any case)
        wait_server(lab, backend, paths, server, log)
        for h in hosts:
            d = tmp / h.name
            (d / "state").mkdir(parents=True)
            cfg = write_varpd_config(d / "varpd.toml", h, state_dir=d / "state", sock=d / "varpd.sock",
                                     mode="push", overlay=VX, bridge=BR, search="etcd", reconcile_interval=3600.0,
                                     log_level="info", properties=backend.properties(h, paths))
            lab.start_varpd(h, cfg)
        for h in hosts:
            lab.wait_ready(h)
        for h in hosts:
            p = lab.popen(lab.host_ns(h), "stdbuf", "-oL", "bridge", "monitor", "fdb")
            threading.Thread(target=_reader, args=(h.name, p.stdout, events), daemon=True).start()
        helper = lab.popen(lab.underlay, sys.executable, "-u", "-m", "bench._etcd", "helper",
                           backend.endpoint(paths), stdin=subprocess.PIPE, cwd=str(Path(__file__).resolve().parents[1]))
        if helper.stdout.readline().strip() != "ready":
            raise RuntimeError(f"etcd helper did not start: {helper.stderr.read()[-800:]}")
        threading.Thread(target=_reader, args=("etcd", helper.stdout, events), daemon=True).start()
        time.sleep(0.3)
        while not events.empty():
            events.get_nowait()
        for i in range(n):
            mac = _mac(i)
            helper.stdin.write(f"{mac} {json.dumps({'ip': DEST, 'port': 4789})}\n")
            helper.stdin.flush()
            t0 = watched = None
            seen: dict[str, int] = {}
            deadline = time.monotonic() + timeout
            while (t0 is None or watched is None or len(seen) < 3) and time.monotonic() < deadline:
                try:
                    who, line, t = events.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if who == "etcd":
                    kind, m, *ts = line.split()
                    if m == mac:
                        if kind == "P":
                            t0, t_ret = int(ts[0]), int(ts[1])
                        else:
                            watched = int(ts[0])
                elif mac in line.lower() and "deleted" not in line.lower():
                    seen.setdefault(who, t)
            if t0 is None or watched is None or len(seen) < 3:
                lost += 1
            else:
                totals.append((max(seen.values()) - t0) / 1e6)
                per_host.append({k: (v - t0) / 1e6 for k, v in seen.items()})
                bases.append((watched - t0) / 1e6)
                after_ret.append((max(seen.values()) - t_ret) / 1e6)
                put_rtt.append((t_ret - t0) / 1e6)
            time.sleep(0.02)
        helper.stdin.close()
    finally:
        lab.down()
    if not totals:
        raise RuntimeError(f"no sample reached all 3 hosts ({lost} lost)")
    p50, p99, b50, b99 = (round(percentile(v, p), 3) for v, p in ((totals, 50), (totals, 99), (bases, 50), (bases, 99)))
    extra = {"n": n, "lost": lost, "total_ms": totals, "watch_ms": bases, "per_host_ms": per_host,
             "from_put_returned_ms": after_ret, "put_rtt_ms": put_rtt}
    note = (f"n={n} lost={lost}; times from the put being issued (the watch event arrives before the put "
            f"returns); from the put returning: p50 {percentile(after_ret, 50):.3f} ms, p99 "
            f"{percentile(after_ret, 99):.3f} ms; put round trip p50 {percentile(put_rtt, 50):.3f} ms")
    return [
        Result(figure="etcd change -> all 3 hosts programmed, p50", value=p50, unit="ms", baseline=b50,
               baseline_name="plain aetcd watcher", target="< 20 ms", passed=p50 < 20 and not lost,
               notes=note, extra=extra),
        Result(figure="etcd change -> all 3 hosts programmed, p99", value=p99, unit="ms", baseline=b99,
               baseline_name="plain aetcd watcher", target="(info)", passed=None, notes=note),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "helper":
        asyncio.run(_helper(sys.argv[2]))
    else:
        sys.exit("usage: python3 -m bench._etcd helper HOST:PORT")
