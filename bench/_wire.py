"""When BGP UPDATEs crossed the underlay: tcpdump captures, tshark decodes (the wire is the judge
of when a speaker actually sent, whatever its API said)."""
from __future__ import annotations

import shutil
import subprocess
import time
from decimal import Decimal
from pathlib import Path


def wire_missing() -> str | None:
    for tool, package in (("tcpdump", "tcpdump"), ("tshark", "tshark")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    return None


class Capture:
    """tcpdump of BGP (tcp port 179) on `dev` in namespace `ns`, whole frames, into `pcap`."""

    def __init__(self, ns: str, dev: str, pcap: Path) -> None:
        self.pcap = pcap
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", dev, "-n", "-s", "0", "-B", "16384",
                                      "-U", "-w", str(pcap), "tcp port 179"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        said = []
        while not said or "listening on" not in said[-1]:  # "listening on DEV, ..." once the socket is bound
            line = self.proc.stderr.readline()
            if not line:
                self.proc.kill()
                raise RuntimeError(f"tcpdump on {ns}/{dev} did not start: {' '.join(said).strip()[:300]}")
            said.append(line)
        self.dropped: int | None = None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # tcpdump flushes and reports its counters on SIGTERM
        try:
            err = self.proc.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            err = self.proc.communicate()[1]
        for line in err.splitlines():
            if "dropped by kernel" in line:
                self.dropped = int(line.split()[0])

    def update_times(self, src: str) -> dict[str, list[int]]:
        """CLOCK_MONOTONIC ns (perf_counter_ns's clock) of every frame carrying an UPDATE from `src`,
        by destination address, in capture order."""
        done = subprocess.run(["tshark", "-n", "-r", str(self.pcap), "-Y", f"bgp.type == 2 && ip.src == {src}",
                               "-T", "fields", "-e", "frame.time_epoch", "-e", "ip.dst"],
                              check=False, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"tshark -r {self.pcap}: {done.stderr.strip()[:300]}")
        offset = _realtime_minus_monotonic()
        out: dict[str, list[int]] = {}
        for line in done.stdout.splitlines():
            stamp, _, dst = line.partition("\t")
            if dst:
                out.setdefault(dst, []).append(int(Decimal(stamp) * 1_000_000_000) - offset)
        return out


def _realtime_minus_monotonic() -> int:
    """pcap stamps are CLOCK_REALTIME; the bench's are CLOCK_MONOTONIC (both system-wide)."""
    best = None
    for _ in range(5):  # the tightest of a few brackets
        m0 = time.perf_counter_ns()
        r = time.time_ns()
        m1 = time.perf_counter_ns()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, r - (m0 + m1) // 2)
    return best[1]
