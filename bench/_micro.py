"""Figures 3 and 4: in-process figures (no kernel): cached lookups, hosts.json parse/RSS, reload diff.

Parse time and RSS are measured in fresh child processes (one per sample), so
that neither allocator reuse nor an earlier parse in this process hides memory.
"""
from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

from ._common import ROOT, Result, median, mkdtemp

LOCAL_IP = "192.0.2.1"


def hosts_text(n: int) -> str:
    """A hosts.json of `n` records (arp + ndp each), as an operator would write it (indent=4)."""
    data = {}
    for i in range(n):
        mac = f"02:42:{(i >> 16) & 0xff:02x}:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}:07"
        data[mac] = {"arp": str(IPv4Address(int(IPv4Address("10.128.0.0")) + i + 1)),
                     "ip": f"192.0.2.{2 + i % 250}", "ndp": f"fd00::{(i + 1) >> 16:x}:{(i + 1) & 0xffff:x}", "port": 4789}
    return json.dumps(data, indent=4, sort_keys=True) + "\n"


# -- figure 3: lookups ------------------------------------------------------------------
def _files_runtime(tmp: Path, n: int):
    """An OverlayRuntime (no kernel: start() is not called) whose backend is a started FilesBackend."""
    from varpd.backend.base import OverlayContext
    from varpd.config.daemon import DaemonSettings, OverlayConfig
    from varpd.daemon.overlay import OverlayRuntime
    from varpd_plugins.files import FilesBackend

    path = tmp / "hosts.json"
    path.write_text(hosts_text(n))
    cfg = OverlayConfig(name="vxb", vni=23, search="files", mode="on-demand",
                        properties={"vxlan/listen_ip": LOCAL_IP, "files/config": str(path)})
    rt = OverlayRuntime(cfg, DaemonSettings(state_dir=tmp, socket=tmp / "s.sock"))
    rt.validate()
    backend = FilesBackend(OverlayContext("vxb", 23, IPv4Address(LOCAL_IP), 4789),
                           {"files/config": str(path), "files/reload_interval": 0})
    return rt, backend


def bench_lookups(n_keys: int, n_ops: int) -> list[Result]:
    from varpd.model.cache import LookupCache

    tmp = Path(mkdtemp(prefix="vb-micro-"))
    rt, backend = _files_runtime(tmp, n_keys)

    async def go() -> dict[str, float]:
        await backend.start()
        rt.backend = backend
        macs = list(backend.mapping.by_mac)
        rng = random.Random(1)
        keys = [rng.choice(macs) for _ in range(n_ops)]
        res: dict[str, float] = {}

        # baseline: a plain dict holding the same answers
        plain = {m: backend.mapping.by_mac[m].dest for m in macs}
        get = plain.get
        t0 = time.perf_counter()
        for k in keys:
            get(k)
        res["dict"] = n_ops / (time.perf_counter() - t0)

        # LookupCache.get, warm
        cache = LookupCache(300.0, 5.0, 0.2)
        for m in macs:
            cache.put(m, plain[m])
        cget = cache.get
        t0 = time.perf_counter()
        for k in keys:
            cget(k)
        res["cache_get"] = n_ops / (time.perf_counter() - t0)

        # the daemon's _lookup_mac with a warm cache (what an L2 miss for a known MAC costs before programming)
        for m in macs:
            await rt._lookup_mac(m)
        lookups_before = sum(rt.lookup_latency.counts)
        lk = rt._lookup_mac
        t0 = time.perf_counter()
        for k in keys:
            await lk(k)
        res["lookup_mac_warm"] = n_ops / (time.perf_counter() - t0)
        assert sum(rt.lookup_latency.counts) == lookups_before, "warm path went to the backend"

        # uncached: the files backend's lookup() itself
        bl = backend.lookup
        t0 = time.perf_counter()
        for k in keys:
            await bl(k)
        res["backend_lookup"] = n_ops / (time.perf_counter() - t0)
        await backend.stop()
        return res

    r = asyncio.run(go())
    common = dict(unit="lookups/s", baseline=round(r["dict"]), baseline_name="dict.get")
    return [
        Result(figure=f"LookupCache.get, warm ({n_keys} keys)", value=round(r["cache_get"]),
               target="> 200k/s", passed=r["cache_get"] > 200_000, **common),
        Result(figure="OverlayRuntime._lookup_mac, warm cache (await)", value=round(r["lookup_mac_warm"]),
               target="> 200k/s", passed=r["lookup_mac_warm"] > 200_000, **common),
        Result(figure="files backend lookup(), uncached (await)", value=round(r["backend_lookup"]),
               notes="informational", **common),
    ]


# -- figure 4: hosts.json -----------------------------------------------------------------
_CHILD = r"""
import gc, json, sys, time
def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
what, path = sys.argv[1], sys.argv[2]
text = open(path, encoding="utf-8").read()
from varpd.config.hosts import parse_hosts  # imported before the first RSS sample in both modes
gc.collect()
before = rss_kb()
t0 = time.perf_counter()
obj = parse_hosts(text, path) if what == "parse_hosts" else json.loads(text)
dt = time.perf_counter() - t0
after = rss_kb()
n = len(obj)
print(json.dumps({"seconds": dt, "rss_kb": after - before, "n": n}))
"""


def _child(what: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, what, str(path)], capture_output=True, text=True,
                         check=True, cwd=ROOT, timeout=120).stdout
    return json.loads(out)


def bench_hosts(n: int, samples: int) -> list[Result]:
    tmp = Path(mkdtemp(prefix="vb-hosts-"))
    path = tmp / "hosts.json"
    text = hosts_text(n)
    path.write_text(text)
    runs: dict[str, list[dict]] = {"parse_hosts": [], "json.loads": []}
    for _ in range(samples):  # interleaved
        for what in runs:
            r = _child(what, path)
            assert r["n"] == n, r
            runs[what].append(r)
    p_t = median([r["seconds"] for r in runs["parse_hosts"]])
    j_t = median([r["seconds"] for r in runs["json.loads"]])
    p_m = median([r["rss_kb"] for r in runs["parse_hosts"]]) / 1024
    j_m = median([r["rss_kb"] for r in runs["json.loads"]]) / 1024
    size_mb = len(text.encode()) / 1e6
    out = [
        Result(figure=f"hosts.json parse, {n} MACs ({size_mb:.1f} MB)", value=round(p_t, 3), unit="s",
               baseline=round(j_t, 3), baseline_name="json.loads", target="< 1 s", passed=p_t < 1.0,
               notes=f"median of {samples} fresh processes"),
        Result(figure=f"hosts.json RSS delta, {n} MACs", value=round(p_m, 1), unit="MB",
               baseline=round(j_m, 1), baseline_name="json.loads", target="< 150 MB", passed=p_m < 150),
    ]
    out.append(_reload(tmp, n))
    return out


def _reload(tmp: Path, n: int) -> Result:
    """Change one record of an n-record file, reload the files backend, count the kernel operations
    push mode derives from the MappingChange (DesiredState.apply, what OverlayRuntime._apply_change runs)."""
    from varpd.backend.base import OverlayContext
    from varpd.daemon.desired import DesiredState
    from varpd.model import Destination
    from varpd_plugins.files import FilesBackend

    path = tmp / "reload.json"
    text = hosts_text(n)
    path.write_text(text)
    data = json.loads(text)
    mac = sorted(data)[n // 2]
    old_ip = data[mac]["ip"]
    data[mac]["ip"] = "192.0.2.254" if old_ip != "192.0.2.254" else "192.0.2.253"  # the VNIC moved host

    async def go():
        local = Destination(IPv4Address(LOCAL_IP), 4789)
        backend = FilesBackend(OverlayContext("vxb", 23, local.ip, 4789),
                               {"files/config": str(path), "files/reload_interval": 0})
        await backend.start()
        desired = DesiredState(local)
        desired.load(backend.snapshot())
        path.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n")
        t0 = time.perf_counter()
        change = await backend.reload()
        reload_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        add_f, add_n, del_f, del_n = desired.apply(change)
        apply_s = time.perf_counter() - t0
        await backend.stop()
        return change, (add_f, add_n, del_f, del_n), reload_s, apply_s

    change, ops, reload_s, apply_s = asyncio.run(go())
    add_f, add_n, del_f, del_n = ops
    total = sum(map(len, ops))
    ok = (len(change.upserted), len(change.removed)) == (1, 0) and len(add_f) == 1 and len(add_n) == 2 \
        and not del_f and not del_n
    return Result(
        figure=f"reload of a 1-record change in {n} MACs: kernel ops", value=total, unit="ops",
        baseline=3, baseline_name="1 FDB + 2 neigh", target="1 FDB + its neighbours", passed=ok,
        notes=(f"add_fdb={len(add_f)} add_neigh={len(add_n)} del_fdb={len(del_f)} del_neigh={len(del_n)}; "
               f"reload {reload_s:.2f} s, diff->ops {apply_s * 1e3:.2f} ms"),
        extra={"reload_s": reload_s, "apply_s": apply_s, "upserted": len(change.upserted),
               "removed": len(change.removed)},
    )
