"""Figure 12: the evpn backend — one type-2 BGP UPDATE → FDB entry, and 10k routes → programmed.

Topology (`vb-<pid>e-*`): the lab's underlay namespace holds an injecting BGP speaker (a gobgpd
at 192.0.2.254, iBGP AS 65000, driven over its gRPC API by this same module run as a
subprocess in that namespace); host1 runs `varpd daemon` with the evpn backend (its own gobgpd,
peering with 192.0.2.254); host2 is an FRR VTEP (zebra + bgpd, `advertise-all-vni` on vx23),
peering with 192.0.2.254 too.  One UPDATE from the injector reaches both hosts at once.

One sample: t0 = the injector's CLOCK_MONOTONIC (time.perf_counter_ns, system-wide across
namespaces) just before its AddPath of one MAC-only type-2 route; t1 per host = when a
NETLINK_ROUTE listener in that host's namespace receives the RTM_NEWNEIGH (AF_BRIDGE) putting the
MAC on vx23 — varpd's kernel entry, and FRR zebra's, for the same UPDATE in the same run.

10k: the injector adds 10,000 MAC-only routes in one AddPathStream; the time until the 10,000th
FDB entry is seen on each host.  Baseline: `bridge -batch` of the same 10,000 `fdb add` lines
on a VXLAN device of host1 (the kernel's own cost of the entries, no BGP, no daemon).
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from ipaddress import ip_address
from pathlib import Path

from ._common import PREFIX, Result, mkdtemp, nsrun, percentile

VNI, ASN = 23, 65000
INJECTOR_IP, API_PORT = "192.0.2.254", 50599
RD = f"{INJECTOR_IP}:{VNI}"


def _mac(i: int) -> str:
    return f"02:e1:{(i >> 16) & 0xff:02x}:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}:01"


# -- the injector (run in the underlay namespace: python -m bench._evpn inject) ----------------
def _inject() -> None:
    import grpc

    from varpd.model import Destination, MappingRecord
    from varpd_plugins import gobgp_api
    from varpd_plugins.evpn_codec import evpn_family, mac_ip_paths

    api = gobgp_api.load()
    pb = api.pb
    stub = api.grpc.GobgpApiStub(grpc.insecure_channel(f"127.0.0.1:{API_PORT}"))
    for _ in range(200):
        try:
            stub.GetBgp(pb.GetBgpRequest(), timeout=1)
            break
        except grpc.RpcError:
            time.sleep(0.05)
    stub.StartBgp(pb.StartBgpRequest(**{"global": pb.Global(asn=ASN, router_id=INJECTOR_IP, listen_port=179,
                                                             listen_addresses=[INJECTOR_IP])}))
    for peer in sys.argv[2:]:
        stub.AddPeer(pb.AddPeerRequest(peer=pb.Peer(
            conf=pb.PeerConf(neighbor_address=peer, peer_asn=ASN),
            timers=pb.Timers(config=pb.TimersConfig(connect_retry=1, hold_time=9, keepalive_interval=3)),
            afi_safis=[pb.AfiSafi(config=pb.AfiSafiConfig(family=evpn_family(api), enabled=True))])))
    vtep = Destination(ip_address("192.0.2.77"), 4789)  # a VTEP no host has: entries only

    def paths(i: int, n: int = 1):
        return [p for k in range(i, i + n)
                for p in mac_ip_paths(api, MappingRecord(_mac(k), vtep), rd=RD, rt=f"{ASN}:{VNI}", vni=VNI, seq=0)]

    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "established":
            states = [r.peer.state.session_state for r in stub.ListPeer(pb.ListPeerRequest())]
            print(json.dumps(all(s == pb.PeerState.ESTABLISHED for s in states) and len(states) == len(sys.argv[2:])),
                  flush=True)
        elif cmd == "one":
            path = paths(int(args[0]))[0]
            t0 = time.perf_counter_ns()
            stub.AddPath(pb.AddPathRequest(path=path))
            print(t0, flush=True)
        elif cmd == "many":
            start, n = int(args[0]), int(args[1])
            batch = paths(start, n)
            t0 = time.perf_counter_ns()
            stub.AddPathStream(iter([pb.AddPathStreamRequest(paths=batch[k:k + 1000])
                                     for k in range(0, len(batch), 1000)]))
            print(t0, flush=True)


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
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from varpd_kmod.netlink import AF_BRIDGE, NDA_LLADDR, NDMSG, NLH, RTM_NEWNEIGH, _messages, parse_attrs

        buf = bytearray(1 << 20)
        view = memoryview(buf)
        sock = self.listener.sock
        sock.settimeout(0.2)
        while not self._stop:
            try:
                n = sock.recv_into(buf)
            except socket.timeout:
                continue
            except OSError:  # ENOBUFS: counted entries stay counted; the caller's dump settles it
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


def bench_evpn(samples: int = 200, scale: int = 10_000) -> list[Result]:
    from varpd.lab.frr import FrrRouter, frr_missing, make_vtep
    from varpd.lab.topology import HostSpec, Lab, run, write_varpd_config

    if (reason := frr_missing()) is not None:
        raise RuntimeError(reason)
    h1 = HostSpec("host1", "192.0.2.1", "de:ad:be:ef:00:00", "10.55.55.2", "fe80::3")
    h2 = HostSpec("host2", "192.0.2.2", "de:ad:be:ef:00:01", "10.55.55.3", "fe80::4")
    lab = Lab([h1, h2], prefix=f"{PREFIX}e-")
    frr = FrrRouter(lab.host_ns(h2), router_id=h2.underlay_ip, asn=ASN, neighbors=(INJECTOR_IP,))
    injector = gobgpd = None
    watchers: list[_Entries] = []
    try:
        lab.up()
        run("ip", "-n", lab.underlay, "addr", "add", f"{INJECTOR_IP}/24", "dev", "ubr0")
        gobgpd = subprocess.Popen(["ip", "netns", "exec", lab.underlay, "gobgpd", f"--api-hosts=127.0.0.1:{API_PORT}",
                                   "--pprof-disable", "--log-level=warn"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        injector = subprocess.Popen(["ip", "netns", "exec", lab.underlay, sys.executable, "-m", "bench._evpn",
                                     "inject", h1.underlay_ip, h2.underlay_ip], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True, cwd=str(Path(__file__).resolve().parents[1]))
        assert injector.stdout.readline().strip() == "ready", "the injector did not start"

        def ask(line: str) -> str:
            injector.stdin.write(line + "\n")
            injector.stdin.flush()
            return injector.stdout.readline().strip()

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
        deadline = time.monotonic() + 30
        while ask("established") != "true":
            if time.monotonic() > deadline:
                raise RuntimeError("BGP sessions to host1 and host2 not established in 30 s")
            time.sleep(0.2)
        watchers = [_Entries(lab.host_ns(h), _ifindex(lab.host_ns(h), "vx23")) for h in (h1, h2)]
        varpd_us, frr_us, lost = [], [], 0
        for i in range(20 + samples):  # the first 20 warm both paths and are not counted
            t0 = int(ask(f"one {i}"))
            t_varpd, t_frr = (w.when(_mac(i), 5.0) for w in watchers)
            if t_varpd is None or t_frr is None:
                lost += 1
            elif i >= 20:
                varpd_us.append((t_varpd - t0) / 1e3)
                frr_us.append((t_frr - t0) / 1e3)
            time.sleep(0.02)
        # 10k routes in one stream
        base = 1 << 16
        for w in watchers:
            w.expect(bytes.fromhex(_mac(base).replace(":", ""))[:3])
        t0 = int(ask(f"many {base} {scale}"))
        t_varpd, t_frr = (w.count_reaches(scale, 120.0) for w in watchers)
        first = [(w.tracked[0] - t0) / 1e9 if w.tracked else None for w in watchers]
        # baseline: bridge -batch of the same entries on a device of host1
        nsrun(lab.host_ns(h1), "ip", "link", "add", "vxb", "type", "vxlan", "id", "99", "local", h1.underlay_ip,
              "dstport", "4790", "nolearning")
        batch = work / "fdb.batch"
        batch.write_text("".join(f"fdb add {_mac(base + k)} dev vxb dst 192.0.2.77 self permanent\n"
                                 for k in range(scale)))
        b0 = time.perf_counter()
        nsrun(lab.host_ns(h1), "bridge", "-batch", str(batch), timeout=300)
        bridge_s = time.perf_counter() - b0
    finally:
        for w in watchers:
            w.stop()
        for p in (injector, gobgpd):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(5)
        frr.stop()
        lab.down()
    p50, p99 = percentile(varpd_us, 50) / 1e3, percentile(varpd_us, 99) / 1e3
    f50, f99 = percentile(frr_us, 50) / 1e3, percentile(frr_us, 99) / 1e3
    notes = f"{len(varpd_us)} UPDATEs, {lost} lost; same UPDATE to both hosts"
    out = [
        Result("fig12 evpn: type-2 UPDATE -> FDB entry p50 (varpd vs FRR zebra)", p50, "ms", f50, "FRR zebra",
               notes=notes, extra={"varpd_us": varpd_us, "frr_us": frr_us}),
        Result("fig12 evpn: type-2 UPDATE -> FDB entry p99 (varpd vs FRR zebra)", p99, "ms", f99, "FRR zebra",
               notes=notes),
    ]
    if t_varpd is not None:
        out.append(Result(f"fig12 evpn: {scale:,} type-2 routes -> programmed (varpd vs bridge -batch)",
                          (t_varpd - t0) / 1e9, "s", bridge_s, "bridge -batch",
                          notes=f"first entry after {first[0]:.3f} s",
                          extra={"frr_zebra_s": None if t_frr is None else (t_frr - t0) / 1e9}))
    if t_frr is not None:
        out.append(Result(f"fig12 evpn: {scale:,} type-2 routes -> programmed (FRR zebra vs bridge -batch)",
                          (t_frr - t0) / 1e9, "s", bridge_s, "bridge -batch", notes=f"first entry after {first[1]:.3f} s"))
    return out


if __name__ == "__main__" and sys.argv[1:2] == ["inject"]:
    _inject()
