"""tshark as the judge of `varpd snoop -r`: both decode one file, compared field by field.

`snoop_json` runs snoop in a subprocess under a memory cap (RLIMIT_AS), so a decoder that
allocates without bound fails the test instead of exhausting the machine; `disagreements`
lists every field where tshark decoded something and snoop said otherwise.
"""
from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MEMORY_CAP = 1 << 30  # bytes of address space for a decoding subprocess

_FIELDS = ("frame.number", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "udp.srcport", "udp.dstport",
           "vxlan.vni", "eth.src", "eth.dst", "vlan.id", "ieee8021ad.id", "frame.protocols")
_NETWORK = {"ip": "IPv4", "ipv6": "IPv6", "arp": "ARP"}
_TRANSPORT = {"icmp": "ICMP", "icmpv6": "ICMPv6", "udp": "UDP", "tcp": "TCP", "dhcp": "DHCP"}


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_capped(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m varpd.cli.main ARGV` (or a script with argv[0] == "-c") under the memory cap."""
    cmd = [sys.executable, *argv] if argv[0] == "-c" else [sys.executable, "-m", "varpd.cli.main", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=_cap_memory)


def snoop_json(path: Path, *args: str) -> tuple[list[dict], subprocess.CompletedProcess]:
    """The --json objects of `varpd snoop -r PATH ARGS` (never a traceback, whatever the exit status)."""
    done = run_capped(["snoop", "-r", str(path), "--json", *args])
    assert "Traceback" not in done.stderr, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done


def tshark_rows(path: Path, port: int = 4789) -> dict[int, dict[str, list[str]]]:
    """frame number -> field -> every occurrence (outer first), as tshark decodes PATH without
    reassembly (a fragment is judged as it is, like snoop shows it)."""
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark (the judge of the decoder)")
    cmd = ["tshark", "-n", "-r", str(path), "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
           "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,", "-E", "separator=/t"]
    if port != 4789:
        cmd += ["-d", f"udp.port=={port},vxlan"]
    for field in _FIELDS:
        cmd += ["-e", field]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    rows: dict[int, dict[str, list[str]]] = {}
    for line in done.stdout.splitlines():
        values = line.split("\t")
        row = {f: (v.split(",") if v else []) for f, v in zip(_FIELDS, values)}
        rows[int(row["frame.number"][0])] = row
    return rows


def _inner_protocols(row: dict[str, list[str]]) -> list[str]:
    protos = ",".join(row["frame.protocols"]).split(":")
    return protos[protos.index("vxlan") + 1:] if "vxlan" in protos else []


def expected(row: dict[str, list[str]]) -> dict[str, object]:
    """What snoop must show of one tshark row: only the fields tshark decoded."""
    out: dict[str, object] = {}
    protos = ",".join(row["frame.protocols"]).split(":")
    ips = [(a, b) for a, b in zip(row["ip.src"], row["ip.dst"])]
    ip6s = [(a, b) for a, b in zip(row["ipv6.src"], row["ipv6.dst"])]
    outer_v4 = protos.index("ip") if "ip" in protos else 99
    outer_v6 = protos.index("ipv6") if "ipv6" in protos else 99
    outer = ips.pop(0) if outer_v4 < outer_v6 and ips else ip6s.pop(0) if ip6s else None
    if outer:
        out["outer_src"], out["outer_dst"] = outer
    if row["vlan.id"] or row["ieee8021ad.id"]:  # every tag, outer and inner (802.1Q and 802.1ad)
        out["vlan_ids"] = sorted(int(v) for v in row["vlan.id"] + row["ieee8021ad.id"])
    if "vxlan" not in protos:
        return out
    out["outer_sport"], out["outer_dport"] = int(row["udp.srcport"][0]), int(row["udp.dstport"][0])
    out["vni"] = int(row["vxlan.vni"][0])
    inner = _inner_protocols(row)
    outer_eth = 1 if protos[0] == "eth" else 0
    if "eth" in inner and len(row["eth.src"]) > outer_eth:
        out["src_mac"], out["dst_mac"] = row["eth.src"][outer_eth], row["eth.dst"][outer_eth]
    for name in inner:
        if name in _NETWORK:
            out["network"] = _NETWORK[name]
            if name == "ip" and ips:
                out["src_ip"], out["dst_ip"] = ips[0]
            elif name == "ipv6" and ip6s:
                out["src_ip"], out["dst_ip"] = ip6s[0]
            break
    transport = [_TRANSPORT[p] for p in inner if p in _TRANSPORT]
    if transport:
        out["protocol"] = "DHCP" if "DHCP" in transport else transport[0]
    return out


def disagreements(objs: list[dict], rows: dict[int, dict[str, list[str]]]) -> list[str]:
    """Every field snoop shows otherwise than tshark, and every VXLAN frame of tshark snoop skipped."""
    problems = []
    shown = {o["frame"]: o for o in objs}
    for number, row in rows.items():
        want = expected(row)
        got = shown.get(number)
        if got is None:
            if "vni" in want:
                problems.append(f"frame {number}: tshark decodes VXLAN {want}, snoop shows nothing")
            continue
        got = dict(got, vlan_ids=sorted(got["outer_vlans"] + got["vlans"]))
        for key, value in want.items():
            if got.get(key) != value:
                problems.append(f"frame {number}: {key} tshark {value!r} snoop {got.get(key)!r} ({got['text']})")
    return problems
