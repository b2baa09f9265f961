"""What every mode strategy answers; the defaults are those of a mode that keeps no state of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

from varpd.daemon.reconciler import FLOOD_MAC
from varpd.model import Destination, Mapping, MappingChange
from varpd_kmod.types import FdbEntry, L2Miss, L3Miss, NeighEntry

if TYPE_CHECKING:
    from varpd.daemon.overlay import OverlayRuntime


class ModeStrategy:
    """Called by the runtime; `apply_change` and `before_reconcile` run under the runtime's lock."""

    name = ""

    def __init__(self, rt: "OverlayRuntime") -> None:
        self.rt = rt

    def load(self, mapping: Mapping) -> None:
        """The backend's whole mapping at start (enumerable backends only)."""

    async def before_reconcile(self, have_fdb: dict[FdbEntry, bool], have_neigh: dict[NeighEntry, bool], *,
                               adopt: bool) -> None:
        """Refresh what `wanted` returns, given what the kernel holds now (entry → carries varpd's mark)."""

    def wanted(self) -> tuple[Iterable[FdbEntry], Iterable[NeighEntry]]:
        return (), ()

    def wanted_version(self) -> object | None:
        """A value that changes whenever `wanted()` does, so the safety pass's check counts what is
        wanted again only then (KernelSync.check); None: the mode refreshes its state in
        `before_reconcile`, and its safety pass stays a full pass."""
        return None

    def remote_vteps(self) -> set[Destination]:
        """Where `wanted()`'s unicast FDB entries go (the flood list's share): a mode with much
        state keeps it as it changes; this walk suits a mode with a few entries."""
        return {Destination(e.dst, e.port) for e in self.wanted()[0] if e.mac != FLOOD_MAC}

    def want_fdb(self, mac: str) -> Sequence[FdbEntry]:
        """`wanted()`'s FDB entries for one MAC (drift repair asks per kernel event): a mode with
        much state answers from its index; this walk suits a mode with a few entries."""
        return tuple(e for e in self.wanted()[0] if e.mac == mac)

    def want_neigh(self, ip) -> NeighEntry | None:
        """`wanted()`'s neighbour entry for one IP, or None."""
        return next((n for n in self.wanted()[1] if n.ip == ip), None)

    async def apply_change(self, change: MappingChange, snapshot: Mapping | None = None) -> None:
        """A delta from the backend's change stream; `snapshot` is the backend's table right after it."""

    async def on_miss(self, ev: L2Miss | L3Miss) -> None:
        """A kernel miss: only on-demand answers them; elsewhere everything known is programmed already."""

    def forget(self, mac: str) -> None:
        """modify-overlay -d: drop what this mode resolved for `mac`."""

    def clear(self) -> None:
        """modify-overlay -f: drop everything this mode resolved."""

    def installed(self) -> tuple[int, int]:
        """(fdb, neigh) entries this mode installed on demand, for the cache view."""
        return 0, 0
