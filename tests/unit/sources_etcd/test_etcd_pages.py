"""The paged read's windows against a model of etcd's range with a limit (which visits every key
from the request's start to its range_end): every key read once, in order, and few keys visited."""
from __future__ import annotations

import bisect
import random

import pytest

from varpd_plugins.etcd_pages import Windows, prefix_range_end

P = b"/varpd/23/"


def read_all(keys: list[bytes], limit: int) -> tuple[list[bytes], int, int]:
    """→ (keys read in order, requests, keys visited) for sorted `keys`."""
    w = Windows(P, limit)
    out, requests, visited = [], 0, 0
    while True:
        start, end = w.request()
        assert start < end
        lo, hi = bisect.bisect_left(keys, start), bisect.bisect_left(keys, end)
        page = keys[lo:min(hi, lo + limit)]
        requests += 1
        visited += hi - lo  # what etcd 3.4 walks to count the range
        out += page
        if not w.advance(page[0] if page else None, page[-1] if page else None, hi - lo > limit, hi - lo):
            return out, requests, visited


def mac_key(n: int) -> bytes:
    return P + ":".join(f"{n >> s & 0xff:02x}" for s in range(40, -8, -8)).encode()


@pytest.mark.parametrize("layout", ["dense", "random", "odd-keys"])
def test_every_key_once_in_order_and_about_limit_keys_visited_per_request(layout):
    rnd = random.Random(3)
    if layout == "dense":  # one locally administered block: 02:00:01:xx:xx:xx
        keys = [mac_key(0x020001000000 + i) for i in range(20_000)]
    elif layout == "random":
        keys = [mac_key(rnd.getrandbits(48)) for _ in range(20_000)]
    else:  # upper case, dashes, bad and long keys, bytes 0xff, keys of the prefix's neighbours
        keys = [mac_key(0x020001000000 + i) for i in range(5000)]
        keys += [P + mac_key(0x020001000000 + i)[len(P):].upper() for i in range(0, 5000, 7)]
        keys += [P + b"de-ad-be-ef-00-%02x" % i for i in range(50)]
        keys += [P, P + b"\xff" * 30, P + b"\xff", P + b"x" * 200, P + b"02:00:01:00:00:05/extra"]
    keys = sorted(set(keys))
    outside = [b"/varpd/22/02:00:00:00:00:01", b"/varpd/23", prefix_range_end(P)]
    everything = sorted(keys + outside)
    out, requests, visited = read_all(everything, 100)
    assert out == keys
    assert requests <= 3 * len(keys) // 100 + 10
    # the first request or two visit all, the rest ~limit each; paging the whole range visited ~n²/2limit
    assert visited <= 4 * len(keys) < len(keys) ** 2 // 200


@pytest.mark.parametrize("limit", [1, 2, 7])
def test_tiny_pages_cross_empty_stretches_quickly(limit):
    keys = [mac_key(0x020000000000 + i) for i in range(400)] + [mac_key(0x020000000000 + 500), mac_key(2**48 - 1)]
    out, requests, _ = read_all(sorted(keys), limit)
    assert out == sorted(keys) and requests < 2 * len(keys) + 2 * 48


def test_an_empty_range_is_one_request():
    assert read_all([], 5000)[:2] == ([], 1)


def test_prefix_range_end():
    assert prefix_range_end(b"/a/") == b"/a0" and prefix_range_end(b"a\xff") == b"b"
