"""Fuzz the daemon's frame path, not only the parsers: a captured guest frame goes through
the overlay's frame loop (varpd.daemon.guest_frames) (classify → proxy ARP/NDP or DHCP, on-demand mode, native DHCP on)
with a real files backend. Whatever the bytes, nothing raises out of the loop, and nothing is
injected unless the frame is a well-formed request, answered from the mapping.

The AF_PACKET taps and the kernel tables are the only stand-ins: they record what the daemon
would have sent or programmed.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packet_helpers import arp_request, mac as mac_bytes, ns_frame, udhcpc_discover
from varpd.backend.base import OverlayContext
from varpd.config.daemon import DaemonSettings, OverlayConfig
from varpd.daemon.guest_frames import GuestFrames
from varpd.daemon.overlay import OverlayRuntime
from varpd.packet import PacketError, classify
from varpd_kmod.frames import CapturedFrame

GUEST = "52:54:00:aa:bb:cc"  # the sender: known to the mapping, on this host, no address offered
REMOTE_MAC, REMOTE_IP4, REMOTE_IP6 = "52:54:00:00:00:09", "10.0.0.9", "fd00::9"
MAPPING = {
    GUEST: {"ip": "192.0.2.1", "port": 4789, "arp": "10.0.0.5", "ndp": "fd00::5"},
    REMOTE_MAC: {"ip": "192.0.2.2", "port": 4789, "arp": REMOTE_IP4, "ndp": REMOTE_IP6},
}
VALID = [
    arp_request(GUEST, "10.0.0.5", REMOTE_IP4),
    arp_request(GUEST, "10.0.0.5", REMOTE_IP4, vlan=7),
    ns_frame(GUEST, "fd00::5", REMOTE_IP6),
    udhcpc_discover(GUEST),
    udhcpc_discover(REMOTE_MAC),
]


class _Done(Exception):
    """Raised by the tap when the frames run out: ends the (endless) frame loop."""


class RecordingTap:
    def __init__(self, frames: list[bytes] = ()) -> None:
        self.frames, self.sent = list(frames), []

    async def recv(self) -> CapturedFrame:
        if not self.frames:
            raise _Done
        return CapturedFrame(data=self.frames.pop(0), outgoing=False, ifindex=1)

    async def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    def close(self) -> None:
        pass


class RecordingTables:
    def __init__(self) -> None:
        self.added = []

    async def add_fdb(self, entries):
        self.added += entries
        return []

    add_neigh = add_fdb


async def run_frames(hosts_json: Path, frames: list[bytes]) -> tuple[OverlayRuntime, list[bytes], list[bytes]]:
    cfg = OverlayConfig(name="vx9", vni=9, search="files", mode="on-demand", properties={
        "vxlan/listen_ip": "192.0.2.1", "files/config": str(hosts_json),
        "dhcp/native": True, "dhcp/subnet": "10.0.0.0/24"})
    rt = OverlayRuntime(cfg, DaemonSettings(miss_rate_limit=0))
    rt.validate()
    rt.backend = rt.backend_cls(OverlayContext(cfg.name, cfg.vni, rt.local.ip, rt.local.port), rt.values)
    await rt.backend.start()
    rt.tables = RecordingTables()
    bridge, vxlan = RecordingTap(frames), RecordingTap()
    try:
        with pytest.raises(_Done):
            await GuestFrames(rt, bridge, vxlan).run()
    finally:
        await rt.backend.stop()
    return rt, bridge.sent, vxlan.sent


@pytest.fixture(scope="module")
def hosts_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("frames") / "hosts.json"
    path.write_text(json.dumps(MAPPING))
    return path


def is_request(frame: bytes) -> bool:
    try:
        return classify(frame) is not None
    except PacketError:
        return False


def check(hosts_json: Path, frame: bytes) -> None:
    rt, to_guests, to_overlay = asyncio.run(run_frames(hosts_json, [frame]))
    assert rt.counters["errors"] == 0, "a frame raised out of the daemon's handling"
    if not is_request(frame):
        assert to_guests == [] and to_overlay == [], f"a reply was injected for garbage {frame.hex()}"
        assert rt.tables.added == []
    for reply in to_guests:  # proxy answers carry the mapping's MAC, never one taken from the frame
        assert mac_bytes(REMOTE_MAC) in reply or mac_bytes(GUEST) in reply, reply.hex()


def test_valid_requests_are_answered_from_the_mapping(hosts_json):
    for frame, answered in zip(VALID, (True, True, True, False, False)):
        rt, to_guests, _ = asyncio.run(run_frames(hosts_json, [frame]))
        assert rt.counters["errors"] == 0
        if answered:
            assert len(to_guests) == 1 and mac_bytes(REMOTE_MAC) in to_guests[0][:-4], to_guests


def test_truncations_and_corruptions_of_valid_requests(hosts_json):
    frames = [f[:n] for f in VALID for n in range(0, len(f), 3)]
    frames += [f[:i] + bytes((f[i] ^ 0xFF,)) + f[i + 1:] for f in VALID for i in range(0, min(len(f), 120), 2)]
    frames.append(VALID[3] + bytes(2000))  # oversized DHCP
    rt, to_guests, to_overlay = asyncio.run(run_frames(hosts_json, frames))
    assert rt.counters["errors"] == 0 and rt.counters["frames_malformed"] > 0
    answerable = sum(is_request(f) for f in frames)
    assert len(to_guests) + len(to_overlay) <= answerable


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=1600))
def test_random_bytes_inject_nothing(hosts_json, data):
    check(hosts_json, data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(range(len(VALID))), st.binary(min_size=1, max_size=48), st.integers(0, 400))
def test_spliced_garbage_injects_nothing_unparsed(hosts_json, which, junk, at):
    frame = VALID[which]
    at = min(at, len(frame))
    check(hosts_json, frame[:at] + junk + frame[at + len(junk):])
