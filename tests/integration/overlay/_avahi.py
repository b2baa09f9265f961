"""avahi (mDNS/DNS-SD) in a guest namespace, as a user would run it, without touching the host's.

avahi-daemon talks to its clients (avahi-browse, avahi-publish) over the D-Bus system bus, and
keeps its pid file in /run/avahi-daemon: one per guest needs a bus and a /run of its own. So
each guest gets a private dbus-daemon (a system-bus config listening on a socket in the test's
directory; libdbus clients find it through DBUS_SYSTEM_BUS_ADDRESS), and avahi-daemon runs in
a mount namespace of its own (`unshare -m`) with a tmpfs on /run, as root without chroot.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from varpd.lab import Lab

from _overlay_helpers import wait_for

_DBUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

_AVAHI_CONF = """[server]
host-name={host}
domain-name=local
use-ipv4=yes
use-ipv6=yes
allow-interfaces=eth0
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
publish-aaaa-on-ipv4=no
"""


def require_avahi() -> None:
    missing = [b for b in ("avahi-daemon", "avahi-browse", "avahi-publish", "dbus-daemon", "unshare")
               if shutil.which(b) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (Debian: avahi-daemon avahi-utils dbus)")


class AvahiGuest:
    """A dbus-daemon and an avahi-daemon in guest namespace `ns`, killed by the lab's down()."""

    def __init__(self, lab: Lab, ns: str, workdir: Path, host_name: str) -> None:
        self.lab, self.ns, self.dir = lab, ns, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "bus"
        self.env = f"DBUS_SYSTEM_BUS_ADDRESS=unix:path={self.socket}"
        (workdir / "dbus.conf").write_text(_DBUS_CONF.format(socket=self.socket))
        (workdir / "avahi.conf").write_text(_AVAHI_CONF.format(host=host_name))
        self.log = workdir / "avahi.log"
        self._publishers: list[subprocess.Popen] = []

    def start(self) -> "AvahiGuest":
        with open(self.dir / "dbus.log", "w") as out:
            self.lab.popen(self.ns, "dbus-daemon", f"--config-file={self.dir / 'dbus.conf'}", "--nofork",
                           "--nopidfile", stdout=out, stderr=subprocess.STDOUT)
        wait_for(self.socket.exists, 10, f"dbus-daemon in {self.ns}")
        with open(self.log, "w") as out:
            self.lab.popen(self.ns, "env", self.env, "unshare", "-m", "sh", "-c",
                           f"mount -t tmpfs none /run && exec avahi-daemon -f {self.dir / 'avahi.conf'} "
                           "--no-drop-root --no-chroot --no-rlimits", stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait_running(self, timeout: float = 15) -> None:
        wait_for(lambda: "Server startup complete" in self.log.read_text(errors="replace"), timeout,
                 f"avahi-daemon in {self.ns}")

    def publish(self, name: str, stype: str, port: int) -> None:
        out = self.dir / f"publish-{port}.log"
        with open(out, "w") as f:
            self._publishers.append(self.lab.popen(self.ns, "env", self.env, "avahi-publish", "-s", name, stype,
                                                   str(port), stdout=f, stderr=subprocess.STDOUT))
        wait_for(lambda: "Established" in out.read_text(errors="replace"), 15, f"{name} published in {self.ns}")

    def browse(self, stype: str) -> list[list[str]]:
        """The resolved services of `stype` (`avahi-browse -rpt`: '=' lines, split at ';')."""
        res = self.lab.exec(self.ns, "env", self.env, "avahi-browse", "-rpt", stype, check=False, timeout=20)
        return [line.split(";") for line in res.stdout.splitlines() if line.startswith("=")]
