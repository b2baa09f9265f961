"""varpd_kmod._netns.private_mount_reason: a daemon whose /run/netns is a slave mount (ip netns exec,
a systemd unit's sandbox) must not make namespaces, which nobody else would see. The mountinfo lines
are the kernel's own, taken from a host, `ip netns exec` and a systemd 252 unit with ProtectSystem=."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from varpd_kmod._netns import private_mount_reason

HOST = """27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
42 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
"""
IP_NETNS_EXEC = """56 55 254:0 / / rw,relatime - ext4 /dev/vda rw
104 56 254:0 /run/netns /run/netns rw,relatime master:1 - ext4 /dev/vda rw
"""
SYSTEMD_UNIT = """300 299 254:1 / / ro,relatime shared:150 master:1 - ext4 /dev/vda1 rw
310 300 0:25 / /run ro,nosuid,nodev shared:160 master:12 - tmpfs tmpfs rw,size=100244k,mode=755
"""
NO_NETNS_MOUNT_YET = """22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
25 22 0:25 / /run rw,nosuid,nodev shared:12 - tmpfs tmpfs rw,mode=755
"""


@pytest.mark.parametrize("mountinfo, private", [(HOST, False), (IP_NETNS_EXEC, True), (SYSTEMD_UNIT, True),
                                                (NO_NETNS_MOUNT_YET, False)],
                         ids=["host", "ip-netns-exec", "systemd-unit", "host-before-any-netns"])
def test_private_mount_namespaces_are_recognised(mountinfo, private):
    why = private_mount_reason(mountinfo)
    assert (why is not None) == private
    if private:
        assert "private mount namespace" in why and "slave mount" in why


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (unshare -m)")
def test_under_unshare_with_slave_propagation():
    """What systemd does for a sandboxed unit (its mounts made slaves of the host's), by util-linux."""
    ns = f"v13-{os.getpid()}-mnt"  # `ip netns add` makes /run/netns a shared mount, as on any host using them
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        code = "from varpd_kmod._netns import private_mount_reason as r; print(r() is None)"
        here = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        res = subprocess.run(["unshare", "-m", "--propagation", "slave", sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=30)
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=30)
    assert (here.stdout.strip(), res.stdout.strip()) == ("True", "False"), here.stderr + res.stderr
