"""When each kernel entry was programmed, for show-overlay -t's AGE column.

A stamp per key cost 300 MB for a million records (a dict slot per entry, and an address object
per neighbour key kept alive by it): a batch of more than BULK entries (a start, a full pass, a
reload of a big file) is remembered as one time, which every entry without a later stamp of its
own shows.  Entries programmed a few at a time (a change, a miss, a repair) keep their own.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

BULK = 4096


class ProgrammedAt:
    __slots__ = ("_at", "_bulk")

    def __init__(self) -> None:
        self._at: dict[Hashable, float] = {}
        self._bulk: float | None = None

    def stamp(self, keys: Iterable[Hashable], count: int, now: float) -> None:
        if count > BULK:
            self._bulk = now
            for key in keys:
                self._at.pop(key, None)
        else:
            self._at.update((key, now) for key in keys)

    def get(self, key: Hashable) -> float | None:
        return self._at.get(key, self._bulk)
