"""A fixed-bucket latency histogram, cheap enough for the miss hot path (one bisect, two adds).

Exported as a Prometheus histogram at scrape time; the buckets span a cached
answer (tens of µs) to a slow remote backend (a second).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

BOUNDS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass(slots=True)
class LatencyHistogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BOUNDS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations ≤ it) pairs, ending with +Inf, as Prometheus wants them."""
        out, running = [], 0
        for bound, n in zip((*map(str, BOUNDS), "+Inf"), self.counts):
            running += n
            out.append((bound, running))
        return out
