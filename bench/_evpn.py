"""Figure 12: the evpn backend — one type-2 BGP UPDATE → FDB entry, and 10k routes → programmed.

Topology (`vb-<pid>e-*`): the lab's underlay namespace holds an injecting BGP speaker (a gobgpd at
192.0.2.254, iBGP AS 65000, driven over its gRPC API by `bench._evpn_peers inject` run in that
namespace); host1 runs `varpd daemon` with the evpn backend (its own gobgpd, peering with
192.0.2.254); host2 is an FRR VTEP (zebra + bgpd, `advertise-all-vni` on vx23); host3 runs only
varpd's BGP engine (`bench._evpn_peers engine`: gobgpd and GobgpEngine's watch, a subscriber that
counts, no varpd).

One sample: t0 = the injector's CLOCK_MONOTONIC (time.perf_counter_ns, system-wide across
namespaces) just before its AddPath of one MAC-only type-2 route; t1 per host = when a
NETLINK_ROUTE listener in that host's namespace receives the RTM_NEWNEIGH (AF_BRIDGE) putting the
MAC on vx23 — varpd's kernel entry, and FRR zebra's, for the same UPDATE in the same run.

10k: the injector must not be the clock.  Given 10k type-2 paths in one AddPathStream with its
sessions up, gobgpd 3.10 took 216 s to send them (its AddPath walks the whole EVPN table for every
local type-2 path, MAC mobility in `fixupApiPath`; with sessions down the same load took 7-22 s
here and sent nothing).  So the 10,000 routes are loaded into the injector's RIB with every session
administratively down (DisablePeer; the first part's routes withdrawn first), and the sessions are
then enabled one host at a time (EnablePeer, no two receivers sharing the CPUs): the injector sends
its RIB as one burst (0.3-1 s on the wire).  tcpdump on the underlay bridge records the UPDATEs and
tshark dates them: a host's figure runs from the first UPDATE frame to it on the wire to its
10,000th entry (FDB entry on vx23 for host1 and host2; the 10,000th path delivered to the
subscriber for host3), and the injector's own part — first to last UPDATE frame — is its own row.
host3's figure is the engine's share of host1's: gobgpd 3.10 receiving type-2 routes also walks its
EVPN table per route (`TableManager.handleMacMobility`), so it grows superlinearly with the table
(fixed upstream after 3.10: osrg/gobgp#2750 for received routes, #2798 for the API's).  CPU seconds
of each host's processes during its part are recorded beside it (`extra.cpu_s`), and for host1 the
MappingChanges its daemon applied (`extra.mapping_changes`).  Baseline:
`bridge -batch` of the same 10,000 `fdb add` lines on a fresh VXLAN device of host1 (the kernel's
own cost of the entries, no BGP, no daemon).
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from ._common import PREFIX, ROOT, Result, mkdtemp, nsrun, percentile, run
from ._evpn_peers import API_PORT, ASN, INJECTOR_IP, VNI, VTEP
from ._evpn_peers import mac as _mac
from ._wire import Capture, wire_missing


class _Speaker:
    """One of bench._evpn_peers' programs in a lab namespace: a command a line in, a JSON line out."""

    def __init__(self, ns: str, *args: str) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "bench._evpn_peers", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if self.read(60) != "ready":
            self.stop()
            raise RuntimeError(f"bench._evpn_peers {args[0]} did not start in {ns}")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def read(self, timeout: float) -> str | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def ask(self, line: str, timeout: float = 120.0):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.read(timeout)
        if answer is None:
            raise RuntimeError(f"bench._evpn_peers: no answer to {line.split()[0]!r} in {timeout:.0f} s")
        return json.loads(answer)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# -- the bench ---------------------------------------------------------------------------------
class _Entries:
    """A thread counting the FDB entries (AF_BRIDGE RTM_NEWNEIGH) of one device, with receive times."""

    def __init__(self, ns: str, ifindex: int) -> None:
        from ._miss import Listener

        self.listener = Listener(ns)
        self.ifindex = ifindex
        self.seen: dict[bytes, int] = {}
        self.track: bytes | None = None  # count_reaches' MAC prefix: counted as entries arrive
        self.tracked: list[int] = []
        self.lock = threading.Condition()
        self._stop = False
        self.overruns = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from varpd_kmod.netlink import (
            AF_BRIDGE,
            NDA_LLADDR,
            NDMSG,
            NLH,
            RTM_NEWNEIGH,
            _messages,
            parse_attrs,
        )

        buf = bytearray(1 << 20)
        view = memoryview(buf)
        sock = self.listener.sock
        sock.settimeout(0.2)
        while not self._stop:
            try:
                n = sock.recv_into(buf)
            except TimeoutError:
                continue
            except OSError:  # ENOBUFS: entries lost to the listener (a 10k count then never completes)
                self.overruns += 1
                continue
            t = time.perf_counter_ns()
            found = []
            for off, mlen, mtype, _f, _s in _messages(view, n):  # the kernel's own framing walk
                if mtype == RTM_NEWNEIGH:
                    fam, idx, _st, _fl, _t = NDMSG.unpack_from(view, off + NLH.size)
                    if fam == AF_BRIDGE and idx == self.ifindex:
                        mac = parse_attrs(view, off + NLH.size + NDMSG.size, off + mlen).get(NDA_LLADDR)
                        if mac is not None:
                            found.append(bytes(mac))
            if found:
                with self.lock:
                    for mac in found:
                        if mac not in self.seen:
                            self.seen[mac] = t
                            if self.track is not None and mac.startswith(self.track):
                                self.tracked.append(t)
                    self.lock.notify_all()

    def when(self, mac: str, timeout: float) -> int | None:
        key = bytes.fromhex(mac.replace(":", ""))
        with self.lock:
            self.lock.wait_for(lambda: key in self.seen, timeout)
            return self.seen.get(key)

    def expect(self, prefix: bytes) -> None:
        """Count the entries whose MAC starts with `prefix` from now on (before they are sent)."""
        with self.lock:
            self.track, self.tracked = prefix, []

    def count_reaches(self, n: int, timeout: float) -> int | None:
        """The receive time of the n-th entry of the expected prefix, or None."""
        with self.lock:
            if not self.lock.wait_for(lambda: len(self.tracked) >= n, timeout):
                return None
            return self.tracked[n - 1]

    def stop(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.listener.sock.close()


def _ifindex(ns: str, dev: str) -> int:
    return int(nsrun(ns, "cat", f"/sys/class/net/{dev}/ifindex").stdout)


def _fdb_count(ns: str, dev: str, prefix: str) -> int:
    return sum(1 for line in nsrun(ns, "bridge", "fdb", "show", "dev", dev).stdout.splitlines()
               if line.startswith(prefix))


def _cpu(ns: str) -> dict[str, float]:
    """CPU seconds (user + system) so far of the processes in `ns`, by command name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in run("ip", "netns", "pids", ns).stdout.split():
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        out[comm] = out.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 2) for k, v in after.items() if v - before.get(k, 0.0) >= 0.01}


def _mapping_changes(lab, host) -> int:
    """The MappingChanges the backend has emitted so far (the daemon's counter: one kernel round each)."""
    _, body = lab.api(host, "/v1/overlays/vx23", timeout=30.0)
    return int(body.get("counters", {}).get("mapping_changes", 0)) if isinstance(body, dict) else 0


def _curve(marks: list[tuple[int, int]], t0: int) -> dict[int, float]:
    """Seconds from t0 to the k-th entry at tenths of the count: how the rate changes as the table grows."""
    return {k: round((t - t0) / 1e9, 3) for k, t in marks}


def _tenths(times: list[int], n: int) -> list[tuple[int, int]]:
    return [(k, times[k - 1]) for k in sorted({max(1, n * j // 10) for j in range(1, 11)}) if k <= len(times)]


def _until(what: str, done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not within {timeout:.0f} s")
        time.sleep(0.1)


def bench_evpn(samples: int = 200, scale: int = 10_000) -> list[Result]:
    from varpd.lab.frr import FrrRouter, frr_missing, make_vtep
    from varpd.lab.topology import HostSpec, Lab, run, write_varpd_config

    if (reason := frr_missing() or wire_missing()) is not None:
        raise RuntimeError(reason)
    h1 = HostSpec("host1", "192.0.2.1", "de:ad:be:ef:00:00", "10.55.55.2", "fe80::3")
    h2 = HostSpec("host2", "192.0.2.2", "de:ad:be:ef:00:01", "10.55.55.3", "fe80::4")
    h3 = HostSpec("host3", "192.0.2.3", "de:ad:be:ef:00:02", "10.55.55.4", "fe80::5")
    lab = Lab([h1, h2, h3], prefix=f"{PREFIX}e-")
    frr = FrrRouter(lab.host_ns(h2), router_id=h2.underlay_ip, asn=ASN, neighbors=(INJECTOR_IP,))
    injector = engine = gobgpd = capture = None
    watchers: list[_Entries] = []
    try:
        lab.up()
        run("ip", "-n", lab.underlay, "addr", "add", f"{INJECTOR_IP}/24", "dev", "ubr0")
        gobgpd = subprocess.Popen(["ip", "netns", "exec", lab.underlay, "gobgpd", f"--api-hosts=127.0.0.1:{API_PORT}",
                                   "--pprof-disable", "--log-level=warn"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        injector = _Speaker(lab.underlay, "inject", h1.underlay_ip, h2.underlay_ip)
        make_vtep(lab.host_ns(h2), vni=VNI, local_ip=h2.underlay_ip, bridge="br0", vxlan="vx23", svi=[])
        frr.start()
        work = Path(mkdtemp("evpn"))
        (work / "state").mkdir()
        props = {"evpn/asn": ASN, "evpn/neighbors": INJECTOR_IP, "evpn/api_port": 50598,
                 "evpn/sync_wait": 0}  # the injector sends no End-of-RIB (no graceful restart)
        cfg = write_varpd_config(work / "varpd.toml", h1, state_dir=work / "state", sock=work / "varpd.sock",
                                 search="evpn", properties=props, log_level="info", reconcile_interval=3600)
        lab.start_varpd(h1, cfg)
        lab.wait_ready(h1)
        engine = _Speaker(lab.host_ns(h3), "engine", h3.underlay_ip, str(scale))

        def states() -> dict[str, str]:
            return injector.ask("states")

        pair = (h1.underlay_ip, h2.underlay_ip)
        _until("BGP sessions to host1 and host2",
               lambda: all(states().get(a) == "ESTABLISHED" for a in pair), 30)
        watchers = [_Entries(lab.host_ns(h), _ifindex(lab.host_ns(h), "vx23")) for h in (h1, h2)]
        varpd_us, frr_us, lost = [], [], 0
        for i in range(20 + samples):  # the first 20 warm both paths and are not counted
            t0 = injector.ask(f"one {i}")
            t_varpd, t_frr = (w.when(_mac(i), 5.0) for w in watchers)
            if t_varpd is None or t_frr is None:
                lost += 1
            elif i >= 20:
                varpd_us.append((t_varpd - t0) / 1e3)
                frr_us.append((t_frr - t0) / 1e3)
            time.sleep(0.02)

        # 10k: withdraw the samples' routes, every session down, the RIB loaded, then one host at a time
        injector.ask("clear")
        _until("the samples' withdrawals on host1 and host2",
               lambda: not any(_fdb_count(lab.host_ns(h), "vx23", "02:e1:00:") for h in (h1, h2)), 30)
        injector.ask(f"disable {' '.join(pair)}")
        injector.ask(f"add-down {h3.underlay_ip}")
        _until("the injector's sessions down", lambda: "ESTABLISHED" not in states().values(), 30)
        base = 1 << 16
        load_s = injector.ask(f"load {base} {scale}", timeout=600)
        capture = Capture(lab.underlay, "ubr0", work / "bgp.pcap")
        done: dict[str, int | None] = {}
        firsts: dict[str, int | None] = {}
        enabled: dict[str, int] = {}
        marks: dict[str, list] = {}
        cpu: dict[str, dict[str, float]] = {}
        changes: dict[str, int] = {}
        for h, watcher in ((h1, watchers[0]), (h3, None), (h2, watchers[1])):
            if watcher is not None:
                watcher.expect(bytes.fromhex(_mac(base).replace(":", ""))[:3])
            cpu0 = _cpu(lab.host_ns(h))
            changes0 = _mapping_changes(lab, h) if h is h1 else 0
            enabled[h.name] = injector.ask(f"enable {h.underlay_ip}")
            if watcher is not None:
                done[h.name] = watcher.count_reaches(scale, 600.0)
                with watcher.lock:
                    firsts[h.name] = watcher.tracked[0] if watcher.tracked else None
                    marks[h.name] = _tenths(watcher.tracked, scale)
            else:
                answer = engine.read(600.0)
                got = json.loads(answer) if answer else {}
                done[h.name], firsts[h.name], marks[h.name] = got.get("last"), got.get("first"), got.get("marks", [])
            cpu[h.name] = _cpu_delta(cpu0, _cpu(lab.host_ns(h)))
            if h is h1:
                changes[h.name] = _mapping_changes(lab, h) - changes0
        capture.stop()
        wire = capture.update_times(INJECTOR_IP)
        # baseline: bridge -batch of the same entries on a device of host1
        nsrun(lab.host_ns(h1), "ip", "link", "add", "vxb", "type", "vxlan", "id", "99", "local", h1.underlay_ip,
              "dstport", "4790", "nolearning")
        batch = work / "fdb.batch"
        batch.write_text("".join(f"fdb add {_mac(base + k)} dev vxb dst {VTEP} self permanent\n"
                                 for k in range(scale)))
        b0 = time.perf_counter()
        nsrun(lab.host_ns(h1), "bridge", "-batch", str(batch), timeout=300)
        bridge_s = time.perf_counter() - b0
        overruns = sum(w.overruns for w in watchers)
    finally:
        for w in watchers:
            w.stop()
        if capture is not None:
            capture.stop()
        for p in (injector, engine):
            if p is not None:
                p.stop()
        if gobgpd is not None and gobgpd.poll() is None:
            gobgpd.kill()
            gobgpd.wait(5)
        frr.stop()
        lab.down()
    p50, p99 = percentile(varpd_us, 50) / 1e3, percentile(varpd_us, 99) / 1e3
    f50, f99 = percentile(frr_us, 50) / 1e3, percentile(frr_us, 99) / 1e3
    notes = f"{len(varpd_us)} UPDATEs, {lost} lost; the same UPDATE to both hosts"
    out = [
        Result("fig12 evpn: type-2 UPDATE -> FDB entry p50 (varpd vs FRR zebra)", p50, "ms", f50, "FRR zebra",
               target="(info)", notes=notes, extra={"varpd_us": varpd_us, "frr_us": frr_us}),
        Result("fig12 evpn: type-2 UPDATE -> FDB entry p99 (varpd vs FRR zebra)", p99, "ms", f99, "FRR zebra",
               target="(info)", notes=notes),
    ]
    hosts = {h1.name: ("varpd host", h1), h3.name: ("varpd's engine alone: gobgpd + GobgpEngine watch", h3),
             h2.name: ("FRR zebra host", h2)}
    raw = {"injector_rib_load_s": load_s, "bridge_batch_s": bridge_s, "pcap_dropped": capture.dropped,
           "listener_overruns": overruns}
    for name, (label, h) in hosts.items():
        frames = wire.get(h.underlay_ip, [])
        end, first = done.get(name), firsts.get(name)
        if not frames or end is None:
            out.append(Result(f"fig12 evpn: {scale:,} routes -> {label}: not all seen", None, "s", bridge_s,
                              "bridge -batch", target="(info)", passed=False,
                              notes=f"{len(frames)} UPDATE frames on the wire, last entry {end}"))
            continue
        t_wire = frames[0]
        raw[name] = {"enable_to_first_update_s": (t_wire - enabled[name]) / 1e9,
                     "send_s": (frames[-1] - t_wire) / 1e9, "update_frames": len(frames),
                     "first_entry_s": None if first is None else (first - t_wire) / 1e9,
                     "last_entry_s": (end - t_wire) / 1e9, "entries_at_s": _curve(marks.get(name, []), t_wire),
                     "cpu_s": cpu.get(name, {})}
        if name in changes:
            raw[name]["mapping_changes"] = changes[name]
        out.append(Result(f"fig12 evpn: {scale:,} type-2 routes -> {label} (1st UPDATE on the wire -> {scale:,}th "
                          f"{'path' if h is h3 else 'FDB entry'})", (end - t_wire) / 1e9, "s", bridge_s,
                          "bridge -batch", target="(info)",
                          notes=f"injector's UPDATEs to it: {len(frames)} frames in {raw[name]['send_s']:.2f} s",
                          extra=dict(raw[name])))
    sent = raw.get(h1.name, {}).get("send_s")
    out.append(Result(f"fig12 evpn: {scale:,} routes -> sent by the injector (wire: 1st -> last UPDATE to the varpd "
                      "host)", sent, "s", target="(info)",
                      notes=f"its RIB loaded with the sessions down in {load_s:.1f} s (AddPathStream); "
                            f"tcpdump dropped {capture.dropped}, listener overruns {overruns}", extra=raw))
    return out
