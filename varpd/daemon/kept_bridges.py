"""Bridges varpd made for overlays since deleted, kept because other ports (guests) still use them.

delete-overlay never pulls a bridge from under a guest (unless --force-bridge), and never
forgets one either: it stays varpd's, saved in the state directory so it survives restarts,
and is removed by the daemon's retry loop once its last port is gone.
"""

from __future__ import annotations

import logging

from varpd.daemon.errors import StateError
from varpd.daemon.state import StateStore
from varpd_kmod import device as kdev
from varpd_kmod._netns import netns_identity

log = logging.getLogger(__name__)


class KeptBridges:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._bridges: dict[str, tuple[str, str | None]] = {}  # deleted overlay → the bridge it made, its netns

    def keep(self, name: str, bridge: str, ports: list[str], netns: str | None = None) -> dict[str, str]:
        """Record that `bridge` outlives overlay `name`; the answer's entry saying what was kept and why."""
        self._bridges[name] = (bridge, netns)
        try:
            self.store.save_kept_bridge(name, bridge, netns)
        except StateError as exc:  # this run still removes it; a restart would forget it
            log.error("overlay=%s event=state-save-failed bridge=%s error=%s", name, bridge, exc)
        log.warning("overlay=%s event=bridge-kept bridge=%s ports=%s action=remove-when-unused",
                    name, bridge, ",".join(ports))
        return {"device": bridge,
                "reason": f"ports {', '.join(ports)} are still attached: varpd removes it once they are gone "
                          "(delete-overlay --force-bridge detaches them and removes it now)"}

    def load(self, name: str) -> bool:
        """At start: True if `name`'s saved devices are a kept bridge (now tracked again)."""
        bridge = self.store.load_kept_bridge(name)
        if bridge is not None:
            self._bridges[name] = (bridge, self.store.load_netns(name))
        return bridge is not None

    def adopted(self, name: str) -> None:
        """An overlay of that name started again: the bridge is its runtime's once more."""
        self._bridges.pop(name, None)

    async def sweep(self) -> None:
        """Remove the kept bridges that have no ports left (a deleted namespace took its bridge along)."""
        for name, (bridge, netns) in list(self._bridges.items()):
            if (netns is None or netns_identity(netns) is not None) and await kdev.delete_bridge(bridge, netns):
                continue  # still has ports
            self._bridges.pop(name, None)
            self.store.delete(name)
            log.info("overlay=%s event=bridge-removed bridge=%s reason=no-ports-left", name, bridge)
