"""Figure 5: overlay TCP throughput, varpd-programmed (push) vs statically programmed entries.

Two lab hosts (`vb-<pid>i-*`, underlay 192.0.2.1-2 on a bridge), each with a
varpd (files backend, push mode) that creates vx23 + br0, and a guest (MTU 1400).
Rounds alternate the two configurations on the very same devices, in the order
push static, static push, push static, ... so a drift during the run weighs on both:
- push: daemons of a previous push round stopped, every remote entry deleted, then both
  daemons started: entries programmed by varpd;
- static: daemons stopped (SIGTERM leaves the devices), every remote FDB and
  neighbour entry deleted and re-added by the bench with `bridge fdb add` / `ip
  neigh add` (permanent), nothing of varpd running.
iperf3 guest1 → guest2, one TCP stream, `-t DURATION`; the median per configuration.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from varpd.lab.topology import Lab, seed_hosts, write_hosts_json, write_varpd_config

from ._common import PREFIX, Result, median, nsrun, mkdtemp

VX, BR = "vx23", "br0"


def _remote_entries(lab: Lab, host) -> tuple[list[dict], list[dict]]:
    hns = lab.host_ns(host)
    fdb = [e for e in json.loads(nsrun(hns, "bridge", "-j", "fdb", "show", "dev", VX).stdout or "[]") if "dst" in e]
    neigh = json.loads(nsrun(hns, "ip", "-j", "neigh", "show", "dev", VX).stdout or "[]")
    return fdb, neigh


def _wait_programmed(lab: Lab, hosts, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ok = True
        for h in hosts:
            fdb, neigh = _remote_entries(lab, h)
            ok &= len([e for e in fdb if e.get("state") == "permanent"]) == len(hosts) - 1
            ok &= len([e for e in neigh if "PERMANENT" in e.get("state", [])]) == 2 * (len(hosts) - 1)
        if ok:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("push entries did not appear")
        time.sleep(0.1)


def _flush_remote(lab: Lab, hosts) -> None:
    """Delete every remote FDB and neighbour entry, so the next configuration programs its own."""
    for h in hosts:
        hns = lab.host_ns(h)
        fdb, neigh = _remote_entries(lab, h)
        nsrun(hns, "bridge", "-batch", "-", input="".join(f"fdb del {e['mac']} dev {VX} dst {e['dst']} self\n"
                                                           for e in fdb))
        for e in neigh:
            nsrun(hns, "ip", "neigh", "del", e["dst"], "dev", VX)


def _program_static(lab: Lab, hosts) -> None:
    _flush_remote(lab, hosts)
    for h in hosts:
        hns = lab.host_ns(h)
        cmds_add = []
        for r in hosts:
            if r is h:
                continue
            cmds_add.append(f"fdb add {r.guest_mac} dev {VX} dst {r.underlay_ip} port 4789 self permanent\n")
            for ip in (r.guest_ip4, r.guest_ip6):
                nsrun(hns, "ip", "neigh", "add", ip, "lladdr", r.guest_mac, "dev", VX, "nud", "permanent")
        nsrun(hns, "bridge", "-batch", "-", input="".join(cmds_add))
        fdb, neigh = _remote_entries(lab, h)
        assert len(fdb) == len(hosts) - 1 and len(neigh) == 2 * (len(hosts) - 1), (fdb, neigh)


def _iperf(lab: Lab, src_ns: str, dst_ns: str, dst_ip: str, seconds: float) -> float:
    server = lab.popen(dst_ns, "iperf3", "-s", "-1", "-B", dst_ip, "-p", "5201")
    try:
        deadline = time.monotonic() + 10
        while True:
            res = nsrun(src_ns, "iperf3", "-c", dst_ip, "-p", "5201", "-t", str(seconds), "-J",
                        check=False, timeout=seconds + 30)
            try:
                out = json.loads(res.stdout)
            except ValueError:
                out = {}
            if res.returncode == 0 and "error" not in out and "sum_received" in out.get("end", {}):
                break  # (a client started before the server listens can exit 0 with an "error")
            if time.monotonic() > deadline:
                raise RuntimeError(f"iperf3 failed: {res.stdout[-500:]}{res.stderr[-500:]}")
            time.sleep(0.2)
        return out["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


def bench_iperf(rounds: int, seconds: float) -> list[Result]:
    hosts = seed_hosts(2, dhcp_proxy=False)
    lab = Lab(hosts, prefix=f"{PREFIX}i-")
    tmp = Path(mkdtemp(prefix="vb-iperf-"))
    gbps: dict[str, list[float]] = {"push": [], "static": []}
    try:
        lab.up()
        configs = {}
        for h in hosts:
            d = tmp / h.name
            (d / "state").mkdir(parents=True)
            write_hosts_json(d / "hosts.json", hosts)
            configs[h.name] = write_varpd_config(d / "varpd.toml", h, hosts_json=d / "hosts.json",
                                                 state_dir=d / "state", sock=d / "varpd.sock", mode="push",
                                                 overlay=VX, bridge=BR, reconcile_interval=30.0, log_level="info")
        g1, g2 = lab.guest_ns(hosts[0]), lab.guest_ns(hosts[1])
        running = False

        def stop_daemons() -> None:
            """Both daemons gone (exit 0) before any entry is touched: a running daemon puts back
            what is deleted behind its back (drift repair), and a second one refuses to start."""
            nonlocal running
            if running:
                for h in hosts:
                    if lab.stop_varpd(h) != 0:
                        raise RuntimeError(f"varpd on {h.name} did not stop cleanly\n{lab.log_tail(h)}")
                running = False

        def push(first: bool) -> None:
            nonlocal running
            stop_daemons()  # A B B A: a push round can follow a push round
            if not first:
                _flush_remote(lab, hosts)  # varpd programs every entry itself
            for h in hosts:
                lab.start_varpd(h, configs[h.name])
            running = True
            for h in hosts:
                lab.wait_ready(h)
            if first:
                for h in hosts:
                    lab.attach_guest(h, bridge=BR)  # the bridge is varpd's
            _wait_programmed(lab, hosts)

        def static() -> None:
            stop_daemons()
            _program_static(lab, hosts)

        # A B B A ...: a drift during the run (VM neighbours, thermal) weighs on both alike
        order = [("push", "static") if r % 2 == 0 else ("static", "push") for r in range(rounds)]
        for r, pair in enumerate(order):
            for config in pair:
                if config == "push":
                    push(first=r == 0)
                else:
                    static()
                nsrun(g1, "ping", "-c", "1", "-W", "2", hosts[1].guest_ip4)
                gbps[config].append(_iperf(lab, g1, g2, hosts[1].guest_ip4, seconds))
    finally:
        lab.down()
    p, s = median(gbps["push"]), median(gbps["static"])
    return [Result(figure=f"overlay TCP throughput, iperf3 guest->guest ({rounds}x{seconds:g} s)",
                   value=round(p, 3), unit="Gbit/s", baseline=round(s, 3),
                   baseline_name="static bridge fdb/ip neigh entries", target=">= 98% of static",
                   passed=p >= 0.98 * s, notes="median; rounds alternate push/static (A B B A) on the same devices",
                   extra={k: [round(x, 3) for x in v] for k, v in gbps.items()})]
