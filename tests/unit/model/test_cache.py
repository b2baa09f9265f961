from varpd.model.cache import MISSING, LookupCache

from _fake_clock import Clock


def test_positive_and_negative_ttls():
    clock = Clock()
    c = LookupCache(ttl=10, negative_ttl=1, min_interval=0, clock=clock)
    c.put("a", "dest")
    c.put("b", None)
    assert c.get("a") == "dest" and c.get("b") is None
    clock.now = 2
    assert c.get("a") == "dest" and c.get("b") is MISSING
    clock.now = 11
    assert c.get("a") is MISSING
    assert c.negative_hits == 1 and c.hits == 2


def test_rate_limit_per_key():
    clock = Clock()
    c = LookupCache(ttl=10, negative_ttl=1, min_interval=0.5, clock=clock)
    assert c.allow_lookup("x") and not c.allow_lookup("x") and c.allow_lookup("y")
    clock.now = 0.6
    assert c.allow_lookup("x")
    assert c.rate_limited == 1


def test_size_is_bounded():
    c = LookupCache(ttl=10, negative_ttl=10, min_interval=0, max_entries=100)
    for i in range(10_000):
        c.put(i, None)
    assert len(c) <= 100
