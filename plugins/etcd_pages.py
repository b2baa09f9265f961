"""Where each request of a paged etcd range read ends, so that no request costs the whole range.

etcd (3.4 here) answers a range request with a limit by visiting *every* key from the
request's start to its range_end (it counts them all for the response's `count`), so
paging a million keys 5000 at a time cost 200 visits of what was left: 44 s, against
4.8 s for one unpaged read of everything (measured on this machine, 2 cores).  So each
request ends where about `limit` keys are expected: windows are measured in MACs (a
boundary is the prefix and a canonical MAC's text, which sorts as the MAC's integer),
the span of the last page (or, when it held the whole window, the window's `count` over
its width) sizes the next one, and
windows are contiguous, so every key (one spelt otherwise, a bad or a long one too) is in
exactly one.  The first request spans the whole range (one full visit, which also
measures it); the others visit about `limit` keys each.
"""

from __future__ import annotations

_MACS = 1 << 48
GROWTH = 8  # a sparse or empty window lets the next one grow at most this much


def prefix_range_end(prefix: bytes) -> bytes:
    """etcd's end of the range of keys starting with `prefix` (the prefix with its last byte + 1)."""
    out = bytearray(prefix)
    while out:
        if out[-1] < 0xFF:
            out[-1] += 1
            return bytes(out)
        out.pop()
    return b"\0"  # every key


def _text(n: int) -> bytes:
    h = b"%012x" % n
    return b":".join(h[i:i + 2] for i in range(0, 12, 2))


class Windows:
    """The (key, range_end) of each request; advance() after each response, until it says done."""

    def __init__(self, prefix: bytes, limit: int) -> None:
        self.prefix = prefix
        self.limit = max(1, int(limit))
        self.end = prefix_range_end(prefix)
        self.start = prefix
        self.lo = -1  # the last MAC whose boundary is <= start (-1: none)
        self.hi = _MACS  # the request's end, in MACs; _MACS: the range's own end

    def _bound(self, n: int) -> bytes:
        return self.end if n >= _MACS else self.prefix + _text(n)

    def _floor(self, key: bytes) -> int:
        """The last MAC n whose boundary is <= key (-1 if none): 48 steps of bisection."""
        lo, hi = -1, _MACS - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._bound(mid) <= key:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def request(self) -> tuple[bytes, bytes]:
        return self.start, self._bound(self.hi)

    def advance(self, first_key: bytes | None, last_key: bytes | None, more: bool, count: int) -> bool:
        """After a response (its first and last keys, `more`, `count`); False once the whole range is read."""
        if more:  # `limit` keys from first_key to last_key: the next window as wide as they were
            assert first_key is not None and last_key is not None
            self.start = last_key + b"\0"
            first, self.lo = self._floor(first_key), self._floor(self.start)
            width = max(1, self.lo - first)
        else:  # all `count` keys of the window: its density sizes the next one
            if self.hi >= _MACS:
                return False
            span = self.hi - self.lo
            self.start, self.lo = self._bound(self.hi), self.hi
            width = span * GROWTH if count == 0 else max(1, min(span * self.limit // count, span * GROWTH))
        self.hi = min(_MACS, self.lo + width)
        return True
