"""The parser's fast path must accept exactly what HostRecordModel accepts, with the same result:
it exists for speed (100k records in well under a second), never for different rules."""

from hypothesis import given, settings, strategies as st
from pydantic import ValidationError

from varpd.config.hosts import HostRecordModel, _fast_record

MAC = "de:ad:be:ef:00:01"
ips = st.sampled_from(["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1", "224.0.0.1", "0.0.0.0", "", "x", "fe80::3"])
values = st.one_of(ips, st.integers(-1, 70000), st.booleans(), st.none(), st.just([]), st.just("de:ad:be:ef:00:00"),
                   st.just("DE-AD-BE-EF-00-02"), st.just("4789"))
bodies = st.dictionaries(st.sampled_from(["ip", "port", "arp", "ndp", "dhcp-proxy", "other"]), values, max_size=6)


@settings(max_examples=3000)
@given(bodies)
def test_fast_path_agrees_with_the_model(body):
    try:
        slow = HostRecordModel.model_validate(body).to_record(MAC)
    except ValidationError:
        slow = None
    try:
        fast = _fast_record(MAC, body)
    except (ValueError, TypeError, KeyError):
        fast = None  # the caller (parse_hosts) falls back to the model on these
    if fast is not None:
        assert fast == slow, body
