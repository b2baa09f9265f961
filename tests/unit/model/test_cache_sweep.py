"""Issue #12, item 19: LookupCache.sweep() drops expired answers on a timer, so the entry count
(/metrics varpd_cache_entries) and memory follow expiry instead of waiting for the next insert;
it pops expired answers in expiry order and leaves live and stored-again ones alone."""
from __future__ import annotations

import ipaddress

from varpd.model.cache import MISSING, LookupCache

from _fake_clock import Clock


def test_expired_answers_leave_without_another_insert():
    clock = Clock(100.0)
    c = LookupCache(ttl=300, negative_ttl=5, min_interval=0.2, clock=clock)
    for i in range(49_516):
        c.put(f"02:00:{i:08x}", None)  # a storm of unknown destinations
    for i in range(4):
        c.put(f"02:01:{i:08x}", f"192.0.2.{i + 1}")
    assert len(c) == 49_520
    clock.now += 6
    assert c.sweep() == 49_516
    assert len(c) == 4 == c.stats()["entries"] and c.expirations == 49_516
    assert c.sweep() == 0  # nothing more expired
    clock.now += 300
    assert c.sweep() == 4 and len(c) == 0


def test_an_answer_stored_again_lives_its_new_ttl():
    clock = Clock(100.0)
    c = LookupCache(ttl=10, negative_ttl=2, min_interval=0, clock=clock)
    c.put("a", None)
    clock.now += 1.5
    c.put("a", None)  # again, before it expired: the first queue item is now stale
    c.put("b", "dest")
    clock.now += 1
    assert c.sweep() == 0 and c.get("a") is None
    clock.now += 1.5
    assert c.sweep() == 1 and c.get("a") is MISSING and c.get("b") == "dest"


def test_a_negative_answer_replaced_by_a_positive_one_is_not_swept_with_the_negatives():
    clock = Clock(100.0)
    c = LookupCache(ttl=10, negative_ttl=2, min_interval=0, clock=clock)
    c.put("a", None)
    c.put("a", "dest")
    clock.now += 3
    assert c.sweep() == 0 and c.get("a") == "dest"


def test_invalidated_and_cleared_keys_are_skipped():
    clock = Clock(100.0)
    c = LookupCache(ttl=10, negative_ttl=2, min_interval=0, clock=clock)
    c.put("a", None)
    c.put(ipaddress.ip_address("192.0.2.1"), None)  # keys of more than one type, as in an overlay
    c.invalidate("a")
    clock.now += 3
    assert c.sweep() == 1 and len(c) == 0
    c.put("b", None)
    c.clear()
    clock.now += 3
    assert c.sweep() == 0 and c.expirations == 1


def test_rate_limit_stamps_are_swept_too():
    clock = Clock(100.0)
    c = LookupCache(ttl=10, negative_ttl=2, min_interval=0.5, clock=clock)
    for i in range(1000):
        assert c.allow_lookup(i)
    clock.now += 0.4
    assert c.allow_lookup("late")
    clock.now += 0.2
    c.sweep()
    assert list(c._last_lookup) == ["late"]
    assert not c.allow_lookup("late") and c.allow_lookup(0)


def test_the_queues_stay_bounded_when_one_key_is_stored_again_and_again():
    clock = Clock(100.0)
    c = LookupCache(ttl=10, negative_ttl=10, min_interval=0, max_entries=100, clock=clock)
    for _ in range(10_000):
        c.put("a", None)
        c.put(ipaddress.ip_address("2001:db8::1"), None)
    assert max(len(q) for q in c._expiry) <= 2 * c.max_entries + 1
    clock.now += 11
    assert c.sweep() == 2 and len(c) == 0
