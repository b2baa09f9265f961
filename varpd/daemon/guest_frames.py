"""Frames the kernel cannot answer, read from and written to one overlay's bridge.

- DHCPv4 (dhcp_responder decides, this module delivers): a client's broadcast goes to its
  record's dhcp-proxy MAC, a server's broadcast reply to the client, or varpd answers natively.
- ARP for the native server identifier: no machine owns that address, so varpd answers with
  the bridge's MAC; a client renewing at T1 unicasts its REQUEST there, and the tap reads it.
- On-demand mode: the ARP/NS whose miss the kernel dropped, answered from the mapping; later
  ones the kernel's proxy answers itself, so they are left to it.
- Flooding (vxlan/flood = replicate): the kernel carries every broadcast to every host, so DHCP
  is never relayed (the server hears the client itself), and a frame whose source the mapping
  places on another host is left to that host's varpd.

Only frames addressed to the bridge are read (broadcast, multicast, its MAC): a promiscuous
bridge (tcpdump on it) also passes up the frames between its ports (PACKET_OTHERHOST), among
them the ones varpd itself forwarded, which must never be handled twice. A source MAC sending
more than FRAME_RATE frames/s loses the excess (counted as frames_rate_limited), and the loop
yields after every frame, so a flooding guest cannot starve the daemon's other tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from varpd.daemon import dhcp_responder
from varpd.model.ratelimit import KeyedTokenBucket
from varpd.packet import ArpRequest, NeighborSolicitation, PacketError, build_arp_reply, build_neighbor_advertisement, classify
from varpd.packet.dhcp import DhcpFrame, checksum_ok
from varpd_kmod.frames import PACKET_OTHERHOST, FrameTap, bpf_arp_ndp_dhcp
from varpd_kmod.types import CapturedFrame, KmodError
from varpd_kmod.underlay import link_mac

if TYPE_CHECKING:
    from varpd.daemon.overlay import OverlayRuntime

log = logging.getLogger(__name__)

FRAME_RATE = 100.0  # frames per second per source MAC: a DHCP exchange needs 4, a busy ARP cache a few
FRAME_BURST = 200
# an entry programmed this shortly before a request arrived may not have been in the kernel when
# the request crossed the VXLAN device: answer it (a duplicate reply is harmless, a lost one costs 1 s)
KERNEL_RACE_S = 0.05


class GuestFrames:
    """The bridge tap (reads requests, writes answers to local guests) and the VXLAN send-only tap
    (DHCP to a remote dhcp-proxy MAC) of one overlay, and the loop between them."""

    def __init__(self, rt: OverlayRuntime, bridge_tap: FrameTap, vxlan_tap: FrameTap) -> None:
        self.rt = rt
        self.bridge_tap, self.vxlan_tap = bridge_tap, vxlan_tap
        self.limiter: KeyedTokenBucket[bytes] = KeyedTokenBucket(FRAME_RATE, FRAME_BURST)
        self.task: asyncio.Task | None = None  # run(), cancelled by close()

    @classmethod
    def open(cls, rt: OverlayRuntime) -> GuestFrames:
        on_demand, native = rt.mode == "on-demand", rt.native is not None
        # on-demand: ARP/NS, to answer the request whose miss was dropped; native DHCP: ARP for its server id
        bpf = bpf_arp_ndp_dhcp(arp=on_demand or native, icmpv6=on_demand)
        bridge_tap = FrameTap(rt.cfg.bridge, rt.cfg.netns, bpf=bpf, direction="in")
        # only sends (DHCP proxied to a remote MAC): a capturing tap here would clone and filter every frame
        vxlan_tap = FrameTap(rt.name, rt.cfg.netns, capture=False)
        return cls(rt, bridge_tap, vxlan_tap)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        for tap in self.taps:
            tap.close()

    async def server_mac(self) -> str:
        """The bridge's MAC as it is now: a bridge takes the lowest MAC of its ports unless one was set,
        so it changes as guests attach, and a unicast to an old one is not for the bridge any more.
        /sys/class/net shows the daemon's namespace only: another one's bridge is asked by netlink."""
        try:
            if self.rt.cfg.netns is not None:
                return await link_mac(self.rt.cfg.bridge, self.rt.cfg.netns) or self.rt._server_mac
            return Path(f"/sys/class/net/{self.rt.cfg.bridge}/address").read_text().strip()
        except (OSError, KmodError):
            return self.rt._server_mac

    @property
    def taps(self) -> list[FrameTap]:
        return [self.bridge_tap, self.vxlan_tap]

    async def send_to_guests(self, frame: bytes) -> None:
        await self.bridge_tap.send(frame)

    async def run(self) -> None:
        while True:
            captured = await self.bridge_tap.recv()
            try:
                await self.handle(captured)
            finally:
                await asyncio.sleep(0)  # recv() returns at once while frames are queued: let the others run

    async def handle(self, captured: CapturedFrame) -> None:
        counters = self.rt.counters
        if captured.outgoing or captured.pkttype == PACKET_OTHERHOST:
            return  # sent by this host, or seen only because the bridge is promiscuous
        if self.rt.flooding is not None and captured.data[6:12].hex(":") in self.rt.strategy.desired.fdb:
            counters["frames_flooded_in"] += 1  # flooded here from the guest's host, whose varpd answers it
            return
        if not self.limiter.allow(captured.data[6:12]):
            counters["frames_rate_limited"] += 1
            return
        try:
            pkt = classify(captured.data)
            if isinstance(pkt, DhcpFrame) and not captured.csum_partial and not checksum_ok(captured.data):
                counters["frames_bad_checksum"] += 1
                return
        except PacketError as exc:
            counters["frames_malformed"] += 1
            log.debug("overlay=%s malformed frame: %s", self.rt.name, exc)
            return
        if pkt is None:
            return
        try:
            if isinstance(pkt, DhcpFrame):
                counters["dhcp_frames"] += 1
                await self._handle_dhcp(pkt)
            elif isinstance(pkt, ArpRequest) and self.rt.native and pkt.target_ip == self.rt.native.server_ip:
                await self.send_to_guests(build_arp_reply(pkt, await self.server_mac()))
                counters["dhcp_server_arp_replies"] += 1
            elif self.rt.mode == "on-demand":
                await self._answer_first_request(pkt, captured.timestamp)
        except Exception as exc:  # one bad frame must not stop the loop
            counters["errors"] += 1
            log.error("overlay=%s event=frame-failed kind=%s error=%s", self.rt.name, type(pkt).__name__, exc)

    def _kernel_answered(self, target, vlan: int | None, arrived: float) -> bool:
        """The kernel's proxy answers from a neighbour entry that was on the VXLAN device when the
        request crossed it (untagged: a guest's VLAN interface never takes that answer)."""
        if vlan is not None or target not in self.rt.strategy.installed_neigh:
            return False
        # installed_at is set before the entry is programmed (programmed_at only once the kernel ACKed)
        at = self.rt.strategy.installed_at.get(target)
        if not arrived or at is None:
            return False
        return at < arrived - (time.time() - time.monotonic()) - KERNEL_RACE_S

    async def _answer_first_request(self, pkt: ArpRequest | NeighborSolicitation, arrived: float) -> None:
        """The kernel proxy answers once the neighbour entry exists; the request that caused the miss
        is lost, so it is answered here from the mapping (never from the frame). Only that one: a
        request the kernel already answered would get two identical replies."""
        target = pkt.target_ip if isinstance(pkt, ArpRequest) else pkt.target
        if self._kernel_answered(target, pkt.vlan, arrived):
            return
        await self.rt.strategy.resolve_ip(target)
        entry = self.rt.strategy.installed_neigh.get(target)
        if entry is None:
            return
        if isinstance(pkt, ArpRequest):
            reply = build_arp_reply(pkt, entry.mac)
        else:
            reply = build_neighbor_advertisement(pkt, entry.mac)
        await self.send_to_guests(reply)
        self.rt.counters["proxy_injected"] += 1

    async def _handle_dhcp(self, pkt: DhcpFrame) -> None:
        rt = self.rt
        action = await dhcp_responder.respond(pkt, rt.backend, rt.native, await self.server_mac())
        if isinstance(action, dhcp_responder.Inject):
            rt.counters["dhcp_native_replies"] += 1
            await self.send_to_guests(action.frame)
        elif isinstance(action, dhcp_responder.Forward) and rt.flooding is not None:
            rt.counters["dhcp_flooded"] += 1  # the kernel floods the broadcast to every host: a copy is a duplicate
        elif isinstance(action, dhcp_responder.Forward):
            dest = await rt._lookup_mac(action.mac, force=True)
            if dest is None:
                rt.counters["dhcp_dropped"] += 1
                return
            if dest.ip == rt.local.ip:
                await self.send_to_guests(action.frame)
            else:
                if rt.mode == "on-demand":
                    await rt.strategy.resolve_mac(action.mac)
                await self.vxlan_tap.send(action.frame)
            rt.counters["dhcp_proxied"] += 1
        else:
            rt.counters["dhcp_dropped"] += 1
