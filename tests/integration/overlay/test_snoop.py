"""`varpd snoop` on a live overlay: guest1 pings guest2 and host1's underlay shows the VXLAN frames.

One 3-host push-mode lab for the module; snoop runs as a real process in host1's namespace
(AF_PACKET + kernel BPF filter) and must end by itself on -c, or cleanly on SIGTERM/SIGINT.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from _overlay_helpers import overlay_lab, ping


@pytest.fixture(scope="module")
def ov(tmp_path_factory):
    with overlay_lab(tmp_path_factory.mktemp("snoop"), tag="sn", mode="push") as ov:
        ov.wait_pushed()
        yield ov


def start_snoop(ov, *args: str, **kwargs) -> subprocess.Popen:
    """`varpd snoop ARGS` in host1's namespace, returned once its socket is open."""
    proc = ov.lab.popen(ov.lab.host_ns(ov.h1), sys.executable, "-m", "varpd.cli.main", "snoop", *args, **kwargs)
    first = proc.stderr.readline()  # the capture socket and filter exist before this line is printed
    if "listening on" not in first:
        proc.kill()
        _, rest = proc.communicate()
        raise AssertionError(f"snoop did not start: {first}{rest}")
    return proc


def finish(proc: subprocess.Popen, sig: int | None = None, timeout: float = 10) -> tuple[int, str, str]:
    if sig is not None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"snoop did not stop within {timeout}s:\n{out}{err}") from None
    return proc.returncode, out, err


def test_snoop_decodes_the_ping_between_guests(ov):
    g1, g2 = ov.h1, ov.h2
    wanted = start_snoop(ov, "-i", "eth0", "--vni", "23", "-c", "6")
    other_vni = start_snoop(ov, "-i", "eth0", "--vni", "99")
    try:
        ping(ov.lab, ov.g(g1), g2.guest_ip4, count=3)
        rc, out, err = finish(wanted)  # -c 6: three requests and three replies end it
        rc99, out99, err99 = finish(other_vni, signal.SIGTERM)
    finally:
        for p in (wanted, other_vni):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 6 and all(" vni 23 " in line for line in lines), out
    request = (f"{g1.underlay_ip}:", f" > {g2.underlay_ip}:4789 vni 23 {g1.guest_mac} > {g2.guest_mac} IPv4 "
               f"{g1.guest_ip4} > {g2.guest_ip4} ICMP echo request id ")
    reply = (f"{g2.underlay_ip}:", f" > {g1.underlay_ip}:4789 vni 23 {g2.guest_mac} > {g1.guest_mac} IPv4 "
             f"{g2.guest_ip4} > {g1.guest_ip4} ICMP echo reply id ")
    for start, rest in (request, reply):
        assert any(line.split(" ", 1)[1].startswith(start) and rest in line for line in lines), \
            f"no line like {start}…{rest} in:\n{out}"
    assert "malformed" not in out, out
    assert "6 frames" in err

    # the same wire, filtered for a VNI nobody uses: nothing, and a clean exit on SIGTERM
    assert rc99 == 0 and out99 == "" and "0 frames" in err99, (rc99, out99, err99)


def test_snoop_on_all_interfaces_json_and_pcap(ov, tmp_path):
    """No -i: every interface of host1's namespace; --json lines and a -w pcap that -r reads back."""
    pcap = tmp_path / "h1.pcap"
    proc = start_snoop(ov, "--vni", "23", "--json", "-w", str(pcap))
    try:
        ping(ov.lab, ov.g(ov.h2), ov.h1.guest_ip4, count=2)
        rc, out, err = finish(proc, signal.SIGINT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, err
    objs = [json.loads(line) for line in out.splitlines()]
    kinds = {(o["outer_src"], o["outer_dst"], o["src_ip"], o["dst_ip"], o["info"].split(" id ")[0]) for o in objs}
    assert (ov.h2.underlay_ip, ov.h1.underlay_ip, ov.h2.guest_ip4, ov.h1.guest_ip4, "echo request") in kinds, objs
    assert (ov.h1.underlay_ip, ov.h2.underlay_ip, ov.h1.guest_ip4, ov.h2.guest_ip4, "echo reply") in kinds, objs
    assert all(o["vni"] == 23 and o["malformed"] is None for o in objs), objs

    again = subprocess.run([sys.executable, "-m", "varpd.cli.main", "snoop", "-r", str(pcap), "--json"],
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    assert [json.loads(line)["text"] for line in again.stdout.splitlines()] == [o["text"] for o in objs]
