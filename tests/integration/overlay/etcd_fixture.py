"""A real etcd for the etcd-backend tests: on loopback in the root namespace, or inside a lab namespace.

`etcd_server` (module-scoped fixture) starts /usr/bin/etcd on free loopback ports with its data
in a tmp dir, waits for it to be healthy and yields an `EtcdServer` (`endpoint`, `stop()`,
`start()` on the same ports and data, `ctl(...)` for etcdctl); it is killed at the end.
Lab tests use `EtcdServer(..., netns=<underlay ns>, host="192.0.2.254")` so the daemons in the
host namespaces reach it over the lab's underlay bridge.
`etcd_cluster` (module-scoped) is three members on loopback, for failover between endpoints;
`freeze()`/`thaw()` SIGSTOP/SIGCONT a member (stop() thaws first, so cleanup always works).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ETCD = "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def require_etcd() -> None:
    if not os.path.exists(ETCD):
        pytest.skip(f"{ETCD} is missing: install the Debian package etcd-server (CI does)")
    if not os.path.exists(ETCDCTL):
        pytest.skip("etcdctl is missing: install the Debian package etcd-client (CI does)")


def _die_with_parent() -> None:
    """Runs in the child before exec: etcd gets SIGKILL if the test process dies without teardown."""
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdServer:
    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", client_port: int | None = None,
                 peer_port: int | None = None, netns: str | None = None, name: str = "default") -> None:
        self.data_dir = Path(data_dir)
        self.name = name
        self.initial_cluster: str | None = None  # name=peer-url,...: set by EtcdCluster
        self.host = host
        self.netns = netns
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.data_dir.with_name(self.data_dir.name + ".log")

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def _wrap(self, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else cmd

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def start(self, timeout: float = 20.0, *, wait: bool = True) -> "EtcdServer":
        assert self.proc is None or self.proc.poll() is not None, "etcd is already running"
        peer = self.peer_url
        cmd = [ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
               "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
               "--initial-cluster", self.initial_cluster or f"{self.name}={peer}", "--initial-cluster-state", "new",
               "--heartbeat-interval", "50", "--election-timeout", "300", "--log-level", "warn",
               "--logger", "zap"]
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(self._wrap(cmd), stdout=logf, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}:\n{self.log.read_text()[-2000:]}")
            if self.ctl("endpoint", "health", check=False, timeout=5).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd not healthy after {timeout}s:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def freeze(self) -> None:
        """SIGSTOP: the member keeps its sockets open but answers nothing (thaw() undoes it)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.thaw()  # a frozen etcd would not act on SIGTERM
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def ctl(self, *args: str, check: bool = True, timeout: float = 15.0,
            input: str | None = None) -> subprocess.CompletedProcess:
        cmd = self._wrap([ETCDCTL, f"--endpoints={self.url}", "--dial-timeout=2s", "--command-timeout=5s", *args])
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input,
                             env=dict(os.environ, ETCDCTL_API="3"))
        if check and res.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)} failed: {res.stderr.strip()}")
        return res

    def put(self, key: str, value: str) -> None:
        # "--" : a value may start with '-'
        self.ctl("put", "--", key, value)

    def delete(self, key: str, *, prefix: bool = False) -> None:
        self.ctl("del", *(["--prefix"] if prefix else []), "--", key)

    def revision(self) -> int:
        import json
        out = self.ctl("endpoint", "status", "-w", "json").stdout
        return int(json.loads(out)[0]["Status"]["header"]["revision"])

    def compact(self, revision: int | None = None) -> int:
        rev = revision or self.revision()
        self.ctl("compaction", "--physical", str(rev))
        return rev


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory):
    require_etcd()
    server = EtcdServer(tmp_path_factory.mktemp("etcd") / "data")
    try:
        server.start()
        yield server
    finally:
        server.stop(signal.SIGKILL)


class EtcdCluster:
    """Three etcd members on loopback forming one cluster (for failover between endpoints)."""

    def __init__(self, base: Path, size: int = 3) -> None:
        self.members = [EtcdServer(base / f"m{i}", name=f"m{i}") for i in range(size)]
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = cluster

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def start(self) -> "EtcdCluster":
        for m in self.members:  # all at once: a member waits for the others to form the cluster
            m.start(wait=False)
        for m in self.members:
            m.wait_healthy(60.0)  # the first election of three members can be slow on a loaded machine
        return self

    def stop(self) -> None:
        for m in self.members:
            m.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory):
    require_etcd()
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


class TcpProxy:
    """A loopback TCP relay in front of etcd, to break the client's connections on purpose.

    cut(): close every relayed connection; new ones are accepted but *held* (not relayed)
    until release() — so a client reconnecting at once waits instead of failing.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._open = asyncio.Event()
        self._open.set()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> "TcpProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            await self._open.wait()
            if writer.is_closing():
                return
            up_r, up_w = await asyncio.open_connection(*self.upstream)
            self._conns.add(up_w)

            async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                try:
                    while data := await r.read(65536):
                        w.write(data)
                        await w.drain()
                except (OSError, asyncio.CancelledError):
                    pass
                finally:
                    w.close()

            await asyncio.gather(pump(reader, up_w), pump(up_r, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._conns.discard(writer)

    def cut(self) -> None:
        self._open.clear()
        for w in list(self._conns):
            w.close()
        self._conns.clear()

    def release(self) -> None:
        self._open.set()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
