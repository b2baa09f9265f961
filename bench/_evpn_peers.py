"""fig12's BGP speakers other than the hosts under test, each run as `python -m bench._evpn_peers …`
in a lab namespace, driven by one command a line on stdin, answering one line on stdout.

`inject ADDR…` — the injecting gobgpd's driver (gobgpd at INJECTOR_IP, iBGP, its gRPC API): one
type-2 route at a time for the latency samples; for the 10k figure the routes are loaded into its
RIB while every session is administratively down and the sessions are then enabled one at a time,
so that what is timed is the receiver's absorption, not gobgpd's AddPath (3.10 walks the whole EVPN
table for every local type-2 path added — MAC mobility, `fixupApiPath` — and, with sessions up,
sends a 10k stream over minutes).

`engine ADDR N` — the engine-alone baseline: varpd's own GobgpEngine (a gobgpd started and
configured as the evpn backend does, its WatchEvent stream into asyncio) with a subscriber that only
counts; prints the receive time of the first and of the N-th path.  What the varpd host's
figure costs above this is varpd's (decode, table, kernel programming).
"""
from __future__ import annotations

import json
import sys
import time
from ipaddress import ip_address

VNI, ASN = 23, 65000
INJECTOR_IP, API_PORT, ENGINE_API_PORT = "192.0.2.254", 50599, 50597
RD = f"{INJECTOR_IP}:{VNI}"
VTEP = "192.0.2.77"  # a VTEP no host has: entries only


def mac(i: int) -> str:
    return f"02:e1:{(i >> 16) & 0xff:02x}:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}:01"


def _answer(value) -> None:
    print(json.dumps(value), flush=True)


def inject(peers: list[str]) -> None:
    import grpc
    from varpd_plugins import gobgp_api
    from varpd_plugins.evpn_codec import evpn_family, mac_ip_paths

    from varpd.model import Destination, MappingRecord

    api = gobgp_api.load()
    pb = api.pb
    family = evpn_family(api)
    stub = api.grpc.GobgpApiStub(grpc.insecure_channel(f"127.0.0.1:{API_PORT}"))
    for _ in range(200):
        try:
            stub.GetBgp(pb.GetBgpRequest(), timeout=1)
            break
        except grpc.RpcError:
            time.sleep(0.05)
    stub.StartBgp(pb.StartBgpRequest(**{"global": pb.Global(asn=ASN, router_id=INJECTOR_IP, listen_port=179,
                                                             listen_addresses=[INJECTOR_IP])}))

    def add_peer(address: str, admin_down: bool = False) -> None:
        stub.AddPeer(pb.AddPeerRequest(peer=pb.Peer(
            conf=pb.PeerConf(neighbor_address=address, peer_asn=ASN, admin_down=admin_down),
            timers=pb.Timers(config=pb.TimersConfig(connect_retry=1, hold_time=9, keepalive_interval=3)),
            afi_safis=[pb.AfiSafi(config=pb.AfiSafiConfig(family=family, enabled=True))])))

    for address in peers:
        add_peer(address)
    vtep = Destination(ip_address(VTEP), 4789)

    def paths(i: int, n: int = 1):
        return [p for k in range(i, i + n)
                for p in mac_ip_paths(api, MappingRecord(mac(k), vtep), rd=RD, rt=f"{ASN}:{VNI}", vni=VNI, seq=0)]

    def states() -> dict[str, str]:
        return {r.peer.conf.neighbor_address: pb.PeerState.SessionState.Name(r.peer.state.session_state)
                for r in stub.ListPeer(pb.ListPeerRequest())}

    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "states":
            _answer(states())
        elif cmd == "one":  # the time just before the AddPath of one route
            path = paths(int(args[0]))[0]
            t0 = time.perf_counter_ns()
            stub.AddPath(pb.AddPathRequest(path=path))
            _answer(t0)
        elif cmd == "clear":  # every route withdrawn
            stub.DeletePath(pb.DeletePathRequest(table_type=pb.GLOBAL, family=family))
            _answer("ok")
        elif cmd == "add-down":  # a peer configured administratively down
            add_peer(args[0], admin_down=True)
            _answer("ok")
        elif cmd == "disable":
            for address in args:
                stub.DisablePeer(pb.DisablePeerRequest(address=address, communication="bench: next figure"))
            _answer("ok")
        elif cmd == "enable":
            t0 = time.perf_counter_ns()
            stub.EnablePeer(pb.EnablePeerRequest(address=args[0]))
            _answer(t0)
        elif cmd == "load":  # routes into the RIB (sessions down): how long gobgpd's AddPathStream takes
            batch = paths(int(args[0]), int(args[1]))
            t0 = time.perf_counter_ns()
            stub.AddPathStream(iter([pb.AddPathStreamRequest(paths=batch[k:k + 1000])
                                     for k in range(0, len(batch), 1000)]))
            _answer((time.perf_counter_ns() - t0) / 1e9)
        else:
            _answer(f"unknown command {cmd}")


def engine_alone(address: str, n: int) -> None:
    import asyncio

    from varpd_plugins.gobgp_engine import EngineSettings, GobgpEngine

    class Counter:
        def __init__(self) -> None:
            self.count, self.first, self.marks = 0, None, []
            self.tenths = [max(1, n * j // 10) for j in range(1, 11)]

        def engine_paths(self, paths) -> None:
            now = time.perf_counter_ns()
            k = sum(1 for p in paths if not p.is_withdraw)
            if not k or self.count >= n:
                return
            if self.first is None:
                self.first = now
            self.count += k
            while self.tenths and self.count >= self.tenths[0]:
                self.marks.append((self.tenths.pop(0), now))
            if self.count >= n:
                _answer({"first": self.first, "last": now, "count": self.count, "marks": self.marks})

        def engine_peer(self, address: str, state: str) -> None:
            pass

        def engine_lost(self, reason: str) -> None:
            _answer({"lost": reason})

        async def engine_ready(self, engine) -> None:
            pass

    async def main() -> None:
        engine = GobgpEngine(EngineSettings(asn=ASN, router_id=address, listen_ip=address, neighbors=(INJECTOR_IP,),
                                            peer_asn=ASN, api_port=ENGINE_API_PORT))
        engine.subscribers.append(Counter())
        await engine.start()
        print("ready", flush=True)
        try:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes it
        finally:
            await engine.stop()

    asyncio.run(main())


if __name__ == "__main__":
    if sys.argv[1:2] == ["inject"]:
        inject(sys.argv[2:])
    elif sys.argv[1:2] == ["engine"]:
        engine_alone(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("usage: python -m bench._evpn_peers inject ADDR... | engine ADDR N")
