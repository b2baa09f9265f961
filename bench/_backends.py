"""Figure 7: uncached lookup throughput per backend (etcd, http), each against a baseline in the same run.

Everything runs in one namespace of its own (`vb-<pid>b-srv`, only lo), in a child process
(`python3 -m bench._backends child ...`), so the servers die with the namespace on any failure:
- etcd (/usr/bin/etcd, 127.0.0.1:2379) seeded with N records under /varpd/23/<mac>; an
  EtcdBackend started against it.  It is enumerable: lookup() answers from its in-memory
  mapping (measured anyway; baseline `dict.get` on a plain dict of the same records).
- `varpd mapping-server` on 127.0.0.1:8080 serving a hosts.json of the same N records; an
  HttpBackend (http/events off, no retries needed) whose lookup() is one GET per call.
  Measured sequentially (one await at a time) and with 32 lookups in flight (asyncio.gather over
  32 workers).  Baseline: the same number of raw aiohttp GETs of the same URLs (same connector
  limits, JSON body decoded) against the same server, alternating with the backend, 3 rounds,
  median.
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ._common import PREFIX, Result, mkdtemp, run

ETCD_BIN = "/usr/bin/etcd"
CONCURRENCY = 32


def _mac(i: int) -> str:
    return f"02:78:{(i >> 16) & 0xff:02x}:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}:01"


def _rec(i: int) -> dict:
    return {"ip": f"192.0.2.{1 + i % 200}", "port": 4789}


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 20.0) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {proc.stdout.read()[-800:] if proc.stdout else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not listening on {port} after {timeout}s")
            time.sleep(0.05)


async def _measure(n_keys: int, n_http: int, n_mem: int, rounds: int) -> dict:
    import aetcd
    import aiohttp
    from ipaddress import IPv4Address
    from varpd.backend.base import OverlayContext
    from varpd_plugins.etcd import EtcdBackend
    from varpd_plugins.http import HttpBackend

    macs = [_mac(i) for i in range(n_keys)]
    # seed etcd
    client = aetcd.Client("127.0.0.1", 2379)
    await client.connect()
    sem = asyncio.Semaphore(64)

    async def put(i: int) -> None:
        async with sem:
            await client.put(f"/varpd/23/{macs[i]}".encode(), json.dumps(_rec(i)).encode())

    await asyncio.gather(*(put(i) for i in range(n_keys)))
    await client.close()

    ctx = OverlayContext("vxb", 23, IPv4Address("192.0.2.1"), 4789)
    out: dict = {"n_keys": n_keys}

    # etcd: in-memory lookup
    eb = EtcdBackend(ctx, {"etcd/endpoints": "127.0.0.1:2379", "etcd/timeout": 2, "etcd/retry_max": 2})
    await eb.start()
    assert len(eb.mapping.by_mac) == n_keys, f"etcd backend loaded {len(eb.mapping.by_mac)} of {n_keys}"
    keys = [macs[i % n_keys] for i in range(n_mem)]
    plain = {m: r.dest for m, r in eb.mapping.by_mac.items()}
    lk, get = eb.lookup, plain.get
    et, dt = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for m in keys:
            await lk(m)
        et.append(n_mem / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for m in keys:
            get(m)
        dt.append(n_mem / (time.perf_counter() - t0))
    assert await lk(macs[0]) is not None
    await eb.stop()
    out["etcd_lookup"], out["dict_get"] = statistics.median(et), statistics.median(dt)
    out["etcd_rounds"], out["dict_rounds"] = et, dt

    # http
    base = "http://127.0.0.1:8080"
    hb = HttpBackend(ctx, {"http/url": base, "http/timeout": "5", "http/retries": 0, "http/events": False})
    await hb.start()
    raw = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64, limit_per_host=32),
                                headers={"Accept": "application/json"})
    hkeys = [macs[i % n_keys] for i in range(n_http)]

    async def raw_get(m: str) -> None:
        async with raw.get(f"{base}/v1/overlays/23/macs/{m}") as resp:
            assert resp.status == 200, resp.status
            await resp.json()

    async def be_get(m: str) -> None:
        if await hb.lookup(m) is None:
            raise RuntimeError(f"http backend: no answer for {m}")

    async def seq(fn) -> float:
        t0 = time.perf_counter()
        for m in hkeys:
            await fn(m)
        return n_http / (time.perf_counter() - t0)

    async def conc(fn) -> float:
        it = iter(hkeys)

        async def worker():
            for m in it:
                await fn(m)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return n_http / (time.perf_counter() - t0)

    # warm both connection pools
    await asyncio.gather(*(be_get(hkeys[i % len(hkeys)]) for i in range(CONCURRENCY)))
    await asyncio.gather(*(raw_get(hkeys[i % len(hkeys)]) for i in range(CONCURRENCY)))
    r = {k: [] for k in ("http_seq", "raw_seq", "http_conc", "raw_conc")}
    for _ in range(rounds):
        r["http_seq"].append(await seq(be_get))
        r["raw_seq"].append(await seq(raw_get))
        r["http_conc"].append(await conc(be_get))
        r["raw_conc"].append(await conc(raw_get))
    out["http_requests"] = hb.stats["requests"]
    await raw.close()
    await hb.stop()
    for k, v in r.items():
        out[k] = statistics.median(v)
        out[k + "_rounds"] = v
    return out


def child(tmp: str, n_keys: int, n_http: int, n_mem: int, rounds: int) -> None:
    """Runs inside the namespace: start etcd and the mapping server, measure, print one JSON line."""
    from varpd.lab.topology import varpd_bin
    tmpd = Path(tmp)
    hosts = tmpd / "hosts.json"
    hosts.write_text(json.dumps({_mac(i): _rec(i) for i in range(n_keys)}))
    procs = []
    try:
        etcd = subprocess.Popen(
            [ETCD_BIN, "--name", "b", "--data-dir", str(tmpd / "etcd"),
             "--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
             "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
             "--initial-cluster", "b=http://127.0.0.1:2380", "--log-level", "warn"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(etcd)
        ms = subprocess.Popen([varpd_bin(), "mapping-server", "--hosts", str(hosts), "--vni", "23",
                               "--listen", "127.0.0.1:8080"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))
        procs.append(ms)
        _wait_port(2379, etcd, "etcd")
        _wait_port(8080, ms, "mapping-server")
        time.sleep(0.3)  # etcd: leader election after the port opens
        out = asyncio.run(_measure(n_keys, n_http, n_mem, rounds))
        print(json.dumps(out), flush=True)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def bench_backends(n_keys: int, n_http: int, n_mem: int, rounds: int) -> list[Result]:
    ns = f"{PREFIX}b-srv"
    tmp = mkdtemp(prefix="vb-backends-")
    run("ip", "netns", "add", ns)
    run("ip", "-n", ns, "link", "set", "lo", "up")
    res = run("ip", "netns", "exec", ns, sys.executable, "-m", "bench._backends", "child", tmp,
              str(n_keys), str(n_http), str(n_mem), str(rounds), timeout=600)
    # the namespace (and anything left in it) goes in cleanup_all() after the figure
    d = json.loads(res.stdout.strip().splitlines()[-1])
    note = f"{n_keys} records; median of {rounds} alternating rounds"
    return [
        Result(figure="etcd backend lookup(), uncached (in-memory)", value=round(d["etcd_lookup"]), unit="/s",
               baseline=round(d["dict_get"]), baseline_name="dict.get", target="-", passed=None,
               notes=note + f"; {n_mem} lookups", extra=d),
        Result(figure="http backend lookup(), sequential", value=round(d["http_seq"]), unit="/s",
               baseline=round(d["raw_seq"]), baseline_name="raw aiohttp GET, same server", target="-",
               passed=None, notes=note + f"; {n_http} lookups, mapping-server on loopback"),
        Result(figure=f"http backend lookup(), {CONCURRENCY} concurrent", value=round(d["http_conc"]), unit="/s",
               baseline=round(d["raw_conc"]), baseline_name=f"raw aiohttp GET x{CONCURRENCY}", target="-",
               passed=None, notes=note + f"; {n_http} lookups"),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "child":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        child(sys.argv[2], *(int(a) for a in sys.argv[3:7]))
    else:
        sys.exit("usage: python3 -m bench._backends child TMP N_KEYS N_HTTP N_MEM ROUNDS")
