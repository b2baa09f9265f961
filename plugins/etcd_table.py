"""Copy-on-write tables: a mapping of a million records whose snapshot costs the recent changes, not the table.

The daemon keeps every snapshot a backend hands it immutable (it diffs against the
last one, and walks one across awaits during a full pass), so a backend that copied
its table for each watch event paid O(n) per event (tens of ms and a second table's
worth of memory at 1M).  A `CowTable` is a big `base` dict, never written once a
snapshot may hold it, and a small `delta` of what changed since (a value, or `GONE`);
`view()` freezes the delta (O(changes)) into a read-only `Layered` mapping over the
shared base.  When the delta outgrows `max(MIN_DELTA, size >> DELTA_SHIFT)`, `compact()`
folds it into a new base (dict.copy of the old one: ~20 ms at 1M on this machine).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping as AbcMapping
from typing import Any

GONE: Any = object()  # in a delta: the base's key is deleted
_ABSENT: Any = object()
MIN_DELTA = 1024
DELTA_SHIFT = 6  # compact once the delta holds more than 1/64 of the table


class Layered(AbcMapping):
    """A read-only dict: `delta` (frozen) over `base` (shared, never written)."""

    __slots__ = ("_base", "_delta", "_size")

    def __init__(self, base: dict, delta: dict, size: int) -> None:
        self._base, self._delta, self._size = base, delta, size

    def __getitem__(self, key: Any) -> Any:
        v = self._delta.get(key, _ABSENT)
        if v is _ABSENT:
            return self._base[key]
        if v is GONE:
            raise KeyError(key)
        return v

    def get(self, key: Any, default: Any = None) -> Any:
        v = self._delta.get(key, _ABSENT)
        if v is _ABSENT:
            return self._base.get(key, default)
        return default if v is GONE else v

    def __contains__(self, key: object) -> bool:
        return self.get(key, _ABSENT) is not _ABSENT

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Any]:
        delta = self._delta
        for key in self._base:
            if key not in delta:
                yield key
        for key, v in delta.items():
            if v is not GONE:
                yield key

    def items(self) -> Iterator[tuple[Any, Any]]:  # type: ignore[override]
        delta = self._delta
        for kv in self._base.items():
            if kv[0] not in delta:
                yield kv
        for kv in delta.items():
            if kv[1] is not GONE:
                yield kv

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        return (v for _, v in self.items())

    def __repr__(self) -> str:
        return f"Layered({len(self)} items, {len(self._delta)} changed)"


class CowTable:
    """The writable side: get/set/pop, view() for a snapshot, compact() when the delta grows."""

    __slots__ = ("_view", "base", "delta", "shared", "size")

    def __init__(self) -> None:
        self.base: dict = {}
        self.delta: dict = {}
        self.size = 0
        self.shared = False  # a view may hold `base`: from now on it is never written
        self._view: AbcMapping | None = None

    def get(self, key: Any, default: Any = None) -> Any:
        v = self.delta.get(key, _ABSENT)
        if v is _ABSENT:
            return self.base.get(key, default)
        return default if v is GONE else v

    def __contains__(self, key: object) -> bool:
        return self.get(key, _ABSENT) is not _ABSENT

    def __len__(self) -> int:
        return self.size

    def set(self, key: Any, value: Any) -> None:
        if not self.shared:
            self.size += key not in self.base
            self.base[key] = value
            return
        if self.get(key, _ABSENT) is _ABSENT:
            self.size += 1
        self.delta[key] = value
        self._view = None

    def pop(self, key: Any) -> None:
        if not self.shared:
            if self.base.pop(key, _ABSENT) is not _ABSENT:
                self.size -= 1
            return
        if self.get(key, _ABSENT) is _ABSENT:
            return
        self.size -= 1
        if key in self.base:
            self.delta[key] = GONE
        else:
            del self.delta[key]
        self._view = None

    def view(self) -> AbcMapping:
        """A read-only snapshot of the table as it is now (later writes never show in it)."""
        self.shared = True
        if not self.delta:
            return self.base
        if self._view is None:
            self._view = Layered(self.base, dict(self.delta), self.size)
        return self._view

    def needs_compacting(self) -> bool:
        return len(self.delta) > max(MIN_DELTA, self.size >> DELTA_SHIFT)

    def compact(self) -> None:
        """Fold the delta into a new base (the old one stays intact for the views holding it)."""
        if not self.delta:
            return
        base = self.base.copy()
        for key, v in self.delta.items():
            if v is GONE:
                del base[key]
            else:
                base[key] = v
        self.base, self.delta, self._view = base, {}, None
