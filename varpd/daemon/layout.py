"""The daemon's `vxlan_layout`: each overlay its own VXLAN device (per-vni), or one shared device.

- per-vni (default): varpd.daemon.placement makes each overlay's VXLAN device (and bridge); the
  kernel's proxy answers ARP/NDP per device from its neighbour entries, misses name the device.
- shared: every push-mode overlay would ride one `external vnifilter` device under one VLAN-aware
  bridge (varpd_kmod.shared_device), each with a VLAN mapped to its VNI.  A per-VNI device and the
  shared one cannot listen on the same address and port (EADDRINUSE when the second comes up), so
  the choice is the daemon's, not the overlay's.  This kernel has no VLAN-aware bridge: the layout
  is refused in one line before anything is made, and its VLAN side is not built yet (README).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from varpd.backend.errors import PropertyError
from varpd_kmod import device as kdev
from varpd_kmod.shared_device import ensure_vlan_bridge
from varpd_kmod.types import KmodError

if TYPE_CHECKING:
    from varpd.daemon.overlay import OverlayRuntime


async def refuse_shared(rt: "OverlayRuntime") -> None:
    """Why `rt` cannot have its place on the shared device: always raises, leaving nothing made."""
    if rt.mode != "push":
        raise PropertyError("mode", f"vxlan_layout=shared carries push-mode overlays only, not {rt.mode}")
    netns, bridge = rt.cfg.netns, rt.settings.shared_bridge
    _index, created = await ensure_vlan_bridge(bridge, netns)  # VlanFilteringMissing on this kernel
    if created:
        with contextlib.suppress(KmodError):
            await kdev.delete_bridge(bridge, netns)
    raise KmodError("vxlan_layout=shared: giving an overlay a VLAN of the shared bridge is not built yet "
                    "(issue 14 item 5); use vxlan_layout=per-vni")
