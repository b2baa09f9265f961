"""Figure 1: bulk FDB / neighbour programming, KernelTables vs iproute2 -batch, same run, same device.

One namespace `vb-<pid>p` with a veth underlay (192.0.2.1) and a VXLAN device
`vx0` created exactly like varpd creates its own (nolearning l2miss l3miss
proxy).  Each round recreates the device, so every measurement starts from an
empty table; rounds alternate iproute2 and KernelTables and the median of the
rounds is reported.  The programmed count is checked with a dump after each run.
"""
from __future__ import annotations

import asyncio
import json
import time
from ipaddress import IPv4Address
from pathlib import Path

from varpd_kmod.netlink import KernelTables
from varpd_kmod.types import FdbEntry, NeighEntry

from ._common import PREFIX, Result, median, nsrun, run, mkdtemp

NS = f"{PREFIX}p"
DEV = "vx0"


def _macs(n: int) -> list[str]:
    return [f"02:5b:{(i >> 16) & 0xff:02x}:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}:01" for i in range(n)]


def _ips(n: int) -> list[IPv4Address]:
    base = int(IPv4Address("10.64.0.0"))
    return [IPv4Address(base + 1 + i) for i in range(n)]


def _remote(i: int) -> str:
    return f"192.0.2.{10 + i % 200}"


def _make_ns() -> None:
    run("ip", "netns", "add", NS)
    nsrun(NS, "ip", "link", "set", "lo", "up")
    nsrun(NS, "ip", "link", "add", "und0", "type", "veth", "peer", "name", "und1")  # no dummy module here
    nsrun(NS, "ip", "link", "set", "und1", "up")
    nsrun(NS, "ip", "addr", "add", "192.0.2.1/24", "dev", "und0")
    nsrun(NS, "ip", "link", "set", "und0", "up")


def _recreate_dev() -> int:
    nsrun(NS, "ip", "link", "del", DEV, check=False)
    nsrun(NS, "ip", "link", "add", DEV, "type", "vxlan", "id", "23", "local", "192.0.2.1", "dstport", "4789",
          "dev", "und0", "nolearning", "l2miss", "l3miss", "proxy")
    nsrun(NS, "ip", "link", "set", DEV, "up")
    return int(json.loads(nsrun(NS, "ip", "-j", "link", "show", DEV).stdout)[0]["ifindex"])


def _count_fdb() -> int:
    out = nsrun(NS, "bridge", "-j", "fdb", "show", "dev", DEV).stdout
    return sum(1 for e in json.loads(out or "[]") if "dst" in e)


def _count_neigh() -> int:
    out = nsrun(NS, "ip", "-j", "neigh", "show", "dev", DEV).stdout
    return sum(1 for e in json.loads(out or "[]") if "PERMANENT" in e.get("state", []))


def _time_batch(tool: str, path: Path) -> float:
    t0 = time.perf_counter()
    nsrun(NS, tool, "-batch", str(path), timeout=120)
    return time.perf_counter() - t0


def _time_tables(ifindex: int, entries, kind: str) -> float:
    async def go() -> float:
        with KernelTables(ifindex, NS) as t:
            t0 = time.perf_counter()
            failures = await (t.add_fdb(entries) if kind == "fdb" else t.add_neigh(entries))
            dt = time.perf_counter() - t0
        if failures:
            raise RuntimeError(f"KernelTables.add_{kind}: {len(failures)} failures, first {failures[0]}")
        return dt

    return asyncio.run(go())


def bench_programming(n: int, rounds: int) -> list[Result]:
    macs, ips = _macs(n), _ips(n)
    fdb_entries = [FdbEntry(m, IPv4Address(_remote(i)), 4789) for i, m in enumerate(macs)]
    neigh_entries = [NeighEntry(ip, macs[i]) for i, ip in enumerate(ips)]
    tmp = Path(mkdtemp(prefix="vb-prog-"))
    fdb_batch = tmp / "fdb.batch"
    fdb_batch.write_text("".join(f"fdb add {m} dev {DEV} dst {_remote(i)} port 4789 self permanent\n"
                                 for i, m in enumerate(macs)))
    neigh_batch = tmp / "neigh.batch"
    neigh_batch.write_text("".join(f"neigh add {ip} lladdr {macs[i]} dev {DEV} nud permanent\n"
                                   for i, ip in enumerate(ips)))
    times = {"fdb_ipr": [], "fdb_kt": [], "neigh_ipr": [], "neigh_kt": []}
    _make_ns()
    try:
        for r in range(rounds):
            # alternate which goes first, so a warm-up or drift effect does not favour one side
            order = [("ipr", "kt"), ("kt", "ipr")][r % 2]
            for kind in ("fdb", "neigh"):
                for who in order:
                    ifindex = _recreate_dev()
                    if who == "ipr":
                        dt = _time_batch("bridge" if kind == "fdb" else "ip", fdb_batch if kind == "fdb" else neigh_batch)
                    else:
                        dt = _time_tables(ifindex, fdb_entries if kind == "fdb" else neigh_entries, kind)
                    got = _count_fdb() if kind == "fdb" else _count_neigh()
                    if got != n:
                        raise RuntimeError(f"{who} {kind}: {got} entries in the kernel, expected {n}")
                    times[f"{kind}_{who}"].append(dt)
    finally:
        nsrun(NS, "ip", "link", "del", DEV, check=False)
        run("ip", "netns", "del", NS, check=False)
    out = []
    for kind, tool in (("fdb", "bridge -batch"), ("neigh", "ip -batch")):
        kt = n / median(times[f"{kind}_kt"])
        ipr = n / median(times[f"{kind}_ipr"])
        ratio = kt / ipr
        out.append(Result(
            figure=f"{kind} programming, {n} entries (KernelTables.add_{kind})",
            value=round(kt), unit="entries/s", baseline=round(ipr), baseline_name=tool,
            target=">= 50% of iproute2", passed=ratio >= 0.5,
            notes=f"median of {rounds} rounds, fresh device each",
            extra={k: [round(x, 4) for x in v] for k, v in times.items() if k.startswith(kind)},
        ))
    return out
