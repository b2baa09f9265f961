"""What `varpd lab up` checks: the tools it runs are installed (named with their Debian package), and,
at the end, that the overlay works: every guest reaches every other over IPv4 and IPv6 (ping)."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from varpd.lab.topology import HostSpec, Lab

# the binaries the lab runs → the Debian package that has them
TOOLS = {"ip": "iproute2", "bridge": "iproute2", "ping": "iputils-ping"}
ATTEMPTS = 4  # on demand, the first packet to a destination may be lost while it is resolved
PARALLEL = 8


def missing_tools() -> str | None:
    """One line naming each missing tool and its Debian package, or None when all are there."""
    missing = [name for name in TOOLS if shutil.which(name) is None]
    if not missing:
        return None
    packages = sorted({TOOLS[name] for name in missing})
    return (f"needs {', '.join(missing)} on PATH: apt-get install {' '.join(packages)} "
            f"(Debian package{'s' if len(packages) > 1 else ''} {', '.join(packages)})")


@dataclass(frozen=True)
class Probe:
    src: HostSpec
    dst: HostSpec
    family: int  # 4 or 6

    @property
    def target(self) -> str:
        return self.dst.guest_ip4 if self.family == 4 else f"{self.dst.guest_ip6}%eth0"

    def __str__(self) -> str:
        return f"{self.src.name}-guest → {self.dst.name}-guest {self.target} (IPv{self.family})"


def _ping(lab: Lab, probe: Probe) -> bool:
    cmd = ["ping", "-n", "-c", "1", "-W", "1", *(["-6"] if probe.family == 6 else []), probe.target]
    for _ in range(ATTEMPTS):
        try:
            if lab.exec(lab.guest_ns(probe.src), *cmd, check=False, timeout=10).returncode == 0:
                return True
        except Exception:  # noqa: BLE001 - a timeout is a failed attempt
            pass
    return False


def reachability(lab: Lab, hosts: list[HostSpec]) -> tuple[int, list[Probe]]:
    """Ping every other guest from every guest, both families → (probes made, the ones that failed)."""
    probes = [Probe(s, d, f) for s in hosts for d in hosts if d is not s for f in (4, 6)]
    with ThreadPoolExecutor(PARALLEL) as pool:
        answered = list(pool.map(lambda p: _ping(lab, p), probes))
    return len(probes), [p for p, ok in zip(probes, answered) if not ok]
