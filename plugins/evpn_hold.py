"""VTEP-loss hold: the entries of a remote VTEP that withdrew everything at once are kept for a while.

Why: a route reflector that is no graceful-restart helper for EVPN (FRR 8.4's helper covers
unicast, multicast and VPN only) withdraws a host's routes the moment its session drops, so a
varpd restarted or crashed on one host would remove its VNICs from every other host's kernel
although its own kernel state still forwards.  The receivers cannot see that session; what they
see is the VTEP's type-3 IMET route withdrawn together with its type-2 routes.  That is taken as
"the VTEP is gone as a whole": its routes are kept, stale and held, for the hold time, then
removed; what it advertises again meanwhile replaces them (only the difference reaches the
kernel).  A type-2 route withdrawn while the VTEP's IMET stays (a VNIC deleted) is removed once
the settle window has passed without that IMET withdrawn; an IMET withdrawn alone (no type-2
route of that VTEP withdrawn within the window) is removed too.  Pure: times are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from varpd.model import IPAddress

from varpd_plugins.evpn_routes import TYPE2, TYPE3, RouteTable

SETTLE = 0.5  # s between a VTEP's IMET and type-2 withdrawals still taken as one loss (FRR: same ms)

FORGET, HELD, WAIT, DONE = "forget", "held", "wait", "done"


@dataclass
class VtepHold:
    table: RouteTable
    hold: float  # seconds; 0 = off (every withdrawal is applied)
    settle: float = SETTLE
    lost: dict[IPAddress, float] = field(default_factory=dict)  # VTEP → when its IMET went: withdrawals held
    ends: dict[IPAddress, float] = field(default_factory=dict)  # VTEP → when what is held of it goes
    started: list[IPAddress] = field(default_factory=list)  # VTEPs lost since the caller last looked (log)
    settled: set[IPAddress] = field(default_factory=set)  # lost VTEPs past the window, held type-2 found

    def withdrawal(self, key: tuple, when: float, now: float) -> str:
        """What to do with a withdrawal received at `when`: FORGET the route; it is HELD now; WAIT
        (ask again on a later tick); DONE (unknown or already held: nothing to do)."""
        r = self.table.routes.get(key)
        if r is None or r.held:
            return DONE
        if not self.hold:
            return FORGET
        if r.kind == TYPE3:
            if r.vtep not in self.lost:
                self.lost[r.vtep] = now
                self.ends[r.vtep] = now + self.hold
                self.settled.discard(r.vtep)
                self.started.append(r.vtep)
            self.table.hold(key)
            return HELD
        if r.vtep in self.lost:
            self.table.hold(key)
            return HELD
        return WAIT if now - when < self.settle else FORGET

    def back(self, vtep: IPAddress) -> bool:
        """The VTEP advertised its IMET again: its withdrawals are applied normally from now; what it
        does not advertise again still goes when its hold ends.  True if it was lost."""
        self.settled.discard(vtep)
        return self.lost.pop(vtep, None) is not None

    def tick(self, now: float) -> tuple[set[str], list[tuple[IPAddress, str, int]]]:
        """End what is due: an IMET withdrawn alone once the window passed, a VTEP's hold at its
        end.  The MACs touched, and (vtep, "imet-only" | "expired", routes removed) for the log."""
        touched: set[str] = set()
        done: list[tuple[IPAddress, str, int]] = []
        for vtep, since in list(self.lost.items()):
            if vtep in self.settled or now - since < self.settle:
                continue
            if self.table.held_of(vtep, TYPE2):  # a whole VTEP: held until its end (checked once)
                self.settled.add(vtep)
                continue
            del self.lost[vtep]
            self.ends.pop(vtep, None)
            n = self.table.held_of(vtep, TYPE3)
            touched.update(self.table.sweep_held(vtep))
            done.append((vtep, "imet-only", n))
        for vtep, end in list(self.ends.items()):
            if now >= end:
                del self.ends[vtep]
                self.lost.pop(vtep, None)
                self.settled.discard(vtep)
                n = self.table.held_of(vtep, None)
                touched.update(self.table.sweep_held(vtep))
                done.append((vtep, "expired", n))
        return touched, done

    def describe(self, now: float) -> dict[str, dict]:
        """show-overlay -b: each held VTEP, its held routes and the seconds left."""
        return {str(v): {"held_routes": self.table.held_of(v, None), "seconds_left": round(max(0.0, end - now), 1),
                         "advertising_again": v not in self.lost}
                for v, end in self.ends.items()}
