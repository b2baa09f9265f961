from varpd.model.ratelimit import KeyedTokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_key_loses_its_excess_the_others_keep_theirs():
    clock = Clock()
    tb = KeyedTokenBucket(10, 20, clock=clock)
    assert sum(tb.allow("flood") for _ in range(100)) == 20
    assert tb.allow("quiet") and tb.refused == 80
    clock.now = 1.0
    assert sum(tb.allow("flood") for _ in range(100)) == 10  # the rate, once the burst is spent


def test_memory_is_bounded_by_max_keys():
    clock = Clock()
    tb = KeyedTokenBucket(10, 20, max_keys=100, clock=clock)
    for i in range(10_000):
        clock.now += 0.001
        assert tb.allow(i)
    assert len(tb) <= 100
