"""Issue #12, item 12: slow admin clients must not exhaust the daemon's file descriptors.

A real AdminServer (unix socket + TCP) runs in a subprocess with RLIMIT_NOFILE 128 (and an
RLIMIT_AS cap); hundreds of clients connect over TCP and send half a request.  The unix socket
still answers while they hold on, the connections beyond the cap are closed at once and counted
in /metrics, the half-sent ones are closed after the header timeout, and the log stays small.
On the old runner the daemon reached its fd limit and logged a traceback per accept attempt."""
from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from varpd.lab.topology import http_get

SERVER = Path(__file__).resolve().parent / "_flood_server.py"
NOFILE = 128
HEADER_TIMEOUT = 1.5
CLIENTS = 400
HALF_REQUEST = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FloodedServer:
    def __init__(self, sock_dir: Path, *extra: str) -> None:
        self.sock, self.port, self.log = sock_dir / "varpd.sock", _free_port(), sock_dir / "server.log"
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen([sys.executable, str(SERVER), str(self.sock), str(self.port), str(NOFILE),
                                      str(HEADER_TIMEOUT), *extra], stdout=subprocess.PIPE, stderr=self._logf)
        line = self.proc.stdout.readline()
        assert line == b"ready\n", self.log.read_text()
        self.clients: list[socket.socket] = []

    def flood(self, n: int = CLIENTS) -> None:
        """n clients that each send half a request and then wait."""
        for _ in range(n):
            try:
                c = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                c.sendall(HALF_REQUEST)
            except OSError:  # the backlog is full: the server stopped accepting
                break
            self.clients.append(c)

    def tcp_get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.proc.kill()
        self.proc.wait(10)
        self._logf.close()


@pytest.fixture
def flooded(sock_dir):
    servers: list[FloodedServer] = []

    def start(*extra: str) -> FloodedServer:
        servers.append(FloodedServer(sock_dir, *extra))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _closed_by_server(c: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before closing the connection, or None if it is still open."""
    c.settimeout(timeout)
    data = b""
    try:
        while chunk := c.recv(4096):
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return data


def _metric(text: str, name: str, listener: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{listener="{listener}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"{name} for {listener} not in /metrics")


def test_half_sent_requests_neither_exhaust_descriptors_nor_flood_the_log(flooded):
    server = flooded()
    server.flood()
    assert len(server.clients) == CLIENTS  # each one accepted (and the excess closed at once)

    # the unix socket answers while the TCP clients hold on
    status, body = http_get(server.sock, "/v1/health", timeout=3)
    assert status == 200 and body["ready"] is True
    status, metrics = http_get(server.sock, "/metrics", timeout=3)
    assert status == 200
    held = _metric(metrics, "varpd_admin_connections", "tcp")
    refused = _metric(metrics, "varpd_admin_connections_refused_total", "tcp")
    assert refused > 0 and 0 < held <= NOFILE // 8, (held, refused)  # the cap: NOFILE / 8 a listener

    # the refused ones got a one-line 503; the held ones are closed after the header timeout
    answers = [_closed_by_server(c, HEADER_TIMEOUT * 4) for c in server.clients]
    assert None not in answers, "a half-sent request outlived the header timeout"
    busy = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
    assert b"too many admin connections on tcp" in busy[0]
    metrics = http_get(server.sock, "/metrics", timeout=3)[1]  # (more were accepted from the backlog)
    assert _metric(metrics, "varpd_admin_connections_refused_total", "tcp") == len(busy)
    assert _metric(metrics, "varpd_admin_connections", "tcp") == 0

    assert server.tcp_get("/v1/health")[0] == 200  # and TCP serves again
    log = server.log.read_text()
    assert "Traceback" not in log and len(log.splitlines()) < 10, log[:3000]


def test_at_the_descriptor_limit_failed_accepts_are_logged_once_per_interval(flooded):
    """A cap above what RLIMIT_NOFILE allows: accept() fails with EMFILE; one line, not a flood."""
    server = flooded("1000")
    server.flood()
    time.sleep(2 * HEADER_TIMEOUT)  # the loop keeps retrying accept() meanwhile
    for c in server.clients:
        _closed_by_server(c, HEADER_TIMEOUT * 4)
    deadline = time.monotonic() + 10
    while True:  # the connections left in the backlog are accepted and time out in turn
        try:
            if server.tcp_get("/v1/health", timeout=1)[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, server.log.read_text()[:3000]
    log = server.log.read_text()
    lines = [ln for ln in log.splitlines() if "admin-accept-failed" in ln]
    assert lines and "Too many open files" in lines[0], log[:3000]
    assert "Traceback" not in log and len(log.splitlines()) < 10, log[:3000]
    assert http_get(server.sock, "/v1/health", timeout=3)[0] == 200
