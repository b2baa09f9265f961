"""One strategy per overlay mode: what the kernel should hold, and how mapping changes and misses get there.

The runtime (varpd.daemon.overlay) owns the device, the kernel tables, the lock and the reconciler;
a strategy owns only its mode's state (the pushed mapping, what misses installed, the point entry).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from varpd.daemon.modes.base import ModeStrategy
from varpd.daemon.modes.on_demand import OnDemandMode
from varpd.daemon.modes.point import PointMode
from varpd.daemon.modes.push import PushMode

if TYPE_CHECKING:
    from varpd.daemon.overlay import OverlayRuntime

STRATEGIES: dict[str, type[ModeStrategy]] = {"push": PushMode, "on-demand": OnDemandMode, "point": PointMode}


def strategy_for(rt: "OverlayRuntime") -> ModeStrategy:
    return STRATEGIES[rt.mode](rt)


__all__ = ["ModeStrategy", "OnDemandMode", "PointMode", "PushMode", "STRATEGIES", "strategy_for"]
