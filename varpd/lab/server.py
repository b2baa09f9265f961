"""The lab's mapping server (etcd, mapping-server, ...): started in the underlay namespace, remembered in
``lab.json`` so that `lab status` and `lab down` (later, separate processes) can find and stop it.

Readiness is probed from a thread that has entered the underlay namespace (varpd_kmod's
run_in_netns), so polling costs no process per attempt.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from varpd_kmod._netns import run_in_netns
from varpd.lab.backends import Backend, LabPaths, Probe
from varpd.lab.topology import Lab, LabError, run, write_atomic

STATE_FILE = "lab.json"


@dataclass(frozen=True)
class LabState:
    """What `lab up` leaves behind for `lab status` and `lab down`: its server, and everything it made —
    the namespaces (every link of the lab lives in one of them and goes with it), the entries of its
    directory that were not there before, and whether it made the directory. `lab down` removes
    exactly these, never something that merely shares the prefix or sits in the same directory."""

    backend: str
    mode: str
    server_pid: int | None = None
    server_endpoint: str | None = None
    server_log: str | None = None
    namespaces: tuple[str, ...] | None = None  # None: a lab.json older than this record
    files: tuple[str, ...] = ()  # names inside the lab directory
    made_dir: bool = False

    def save(self, workdir: Path) -> None:
        write_atomic(workdir / STATE_FILE, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, workdir: str | Path) -> "LabState | None":
        try:
            raw = json.loads((Path(workdir) / STATE_FILE).read_text())
            if raw.get("namespaces") is not None:
                raw["namespaces"] = tuple(str(n) for n in raw["namespaces"])
            raw["files"] = tuple(str(f) for f in raw.get("files", ()))
            return cls(**raw)
        except (OSError, ValueError, TypeError, AttributeError):
            return None


def probe_once(host: str, port: int, probe: Probe, timeout: float = 1.0) -> bool:
    """True when the server answers as `probe` asks (run inside the namespace)."""
    if probe.path is None:
        with socket.create_connection((host, port), timeout):
            return True
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", probe.path)
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        return resp.status == 200 and probe.expect in body
    finally:
        conn.close()


def pid_alive(pid: int | None, workdir: str | Path | None = None) -> bool:
    """Alive, not a zombie, and (given `workdir`) naming the lab's dir on its command line (the server's data
    or hosts.json lives there): a recycled pid never counts, even after its namespace went away."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return workdir is None or os.fsencode(str(workdir)) in f.read()
    except (OSError, IndexError):
        return False


def log_tail(log: str | Path | None, lines: int = 20) -> str:
    try:
        tail = Path(log).read_text(errors="replace").splitlines()[-lines:]  # type: ignore[arg-type]
    except (OSError, TypeError):
        return ""
    return f"\n--- last {len(tail)} lines of {log} ---\n" + "\n".join(tail)


def start_server(lab: Lab, backend: Backend, paths: LabPaths) -> tuple[subprocess.Popen, Path]:
    """Give the underlay bridge the server's address and start the server there (its own session: it
    outlives `lab up`, like the daemons).  → the process and its log."""
    assert backend.server_argv is not None and backend.port is not None
    if backend.missing():
        raise LabError(backend.missing())
    run("ip", "-n", lab.underlay, "addr", "add", f"{paths.server_ip}/24", "dev", "ubr0")
    log = paths.workdir / f"{backend.name}-server.log"
    with open(log, "ab") as logf:
        proc = subprocess.Popen(["ip", "netns", "exec", lab.underlay, *backend.server_argv(paths)],
                                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return proc, log


def wait_server(lab: Lab, backend: Backend, paths: LabPaths, proc: subprocess.Popen, log: Path,
                timeout: float = 20.0) -> None:
    """Poll the probe until it passes; fail early (with the log's tail) if the server exits."""
    assert backend.port is not None
    deadline, last = time.monotonic() + timeout, "no answer yet"
    while True:
        if proc.poll() is not None:
            raise LabError(f"{backend.name} server exited with {proc.returncode}{log_tail(log)}")
        try:
            if run_in_netns(lab.underlay, lambda: probe_once(paths.server_ip, backend.port, backend.probe)):
                return
            last = "not ready"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise LabError(f"{backend.name} server at {backend.endpoint(paths)} not ready after {timeout}s "
                           f"({last}){log_tail(log)}")
        time.sleep(0.1)


def seed_server(lab: Lab, backend: Backend, paths: LabPaths) -> None:
    """Run the backend's seed commands, each in its host's namespace, all at once."""
    if backend.seed is None:
        return
    procs = [(cmd, lab.popen(lab.host_ns(cmd.host), *cmd.argv)) for cmd in backend.seed(paths, lab.hosts)]
    for cmd, proc in procs:
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.returncode != 0:
            raise LabError(f"{cmd.host.name}: {' '.join(cmd.argv[1:3])} failed: {(err or out).strip()}")


def stop_server(pid: int | None, workdir: str | Path, timeout: float = 5.0) -> bool:
    """SIGTERM the lab's server (it leads its own session: signal the group), SIGKILL if it lingers.
    → whether a live server was stopped."""
    if not pid_alive(pid, workdir):
        return False
    assert pid is not None
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child (a failed `lab up`)
                    return True
            except ChildProcessError:
                pass
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
    return True
