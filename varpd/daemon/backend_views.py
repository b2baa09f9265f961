"""What a backend adds to the admin views: its state in show-overlay, the origin of pushed entries in
show-overlay -t, the route behind an answer in lookup-overlay, and its own /metrics samples.

Kept out of the overlay runtime: a backend offers `extra()`, `detail(mac)`, `origin` and
`metrics()` (varpd.backend.base) and these functions put them into the views the runtime makes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from varpd.daemon.overlay import OverlayRuntime


def describe(rt: OverlayRuntime) -> dict[str, Any]:
    """The overlay's description, with the backend's state under "backend" when it has any."""
    out = rt.describe()
    extra = getattr(getattr(rt, "backend", None), "extra", None)
    if extra is not None and (extra := extra()):
        out["backend"] = extra
    return out


async def entries(rt: OverlayRuntime) -> list[dict[str, Any]]:
    """The kernel's entries; those pushed from a backend that names its origin say so (evpn, ...)."""
    rows = await rt.kernel_entries()
    origin = getattr(getattr(rt, "backend", None), "origin", None)
    if origin:
        for row in rows:
            if row.get("origin") == "push":
                row["origin"] = origin
    return rows


def detail(rt: OverlayRuntime, mac: Any) -> dict[str, Any] | None:
    """The backend's account of `mac` (the route it came from), or None."""
    detail_of = getattr(getattr(rt, "backend", None), "detail", None)
    return detail_of(mac) if detail_of is not None and isinstance(mac, str) else None
