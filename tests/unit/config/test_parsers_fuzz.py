"""Property-based fuzz of the two file readers (issue #12): whatever the text, `parse_hosts` and
`load_config` either succeed or raise a ConfigError of one line naming the file; never another
exception, and in memory bounded by the size of the text (tracemalloc's peak)."""
from __future__ import annotations

import json
import tracemalloc

from hypothesis import HealthCheck, given, settings, strategies as st

from varpd.backend.errors import ConfigError
from varpd.config.daemon import load_config
from varpd.config.hosts import parse_hosts

MiB = 1 << 20


def _bounded(call, text: str) -> None:
    """Run call(); assert its allocation peak stays under 4 MiB + 8 bytes per character of `text`."""
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 4 * MiB + 8 * len(text), f"peak {peak} bytes for {len(text)} characters"


def _one_line(exc: ConfigError, source: str) -> None:
    for line in (str(exc), *getattr(exc, "lines", ())):
        assert "\n" not in line and line.startswith(source), line


# -- hosts.json ---------------------------------------------------------------------------------
_MACS = ["de:ad:be:ef:00:01", "DE-AD-BE-EF-00-02", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01",
         "zz", ""]
_VALUES = ["192.0.2.1", "127.0.0.1", "255.255.255.255", "::ffff:192.0.2.1", "224.0.0.1", "ff02::1", "fe80::4",
           "0.0.0.0", "::", "10.55.55.3", "de:ad:be:ef:00:00", "", 4789, 0, 70000, -1, 1.5, True, None, [], {}]
_FIELDS = ["ip", "port", "arp", "ndp", "dhcp-proxy", "x"]


@st.composite
def _hosts_text(draw) -> str:
    records = {}
    for _ in range(draw(st.integers(0, 4))):
        body = {f: draw(st.sampled_from(_VALUES)) for f in draw(st.lists(st.sampled_from(_FIELDS), max_size=6))}
        records[draw(st.sampled_from(_MACS) | st.text(max_size=17))] = body
    if draw(st.booleans()):  # a huge string as a field's value or as a key, in a record that is wrong
        huge = draw(st.sampled_from(["9", "a", "\\", "\u00e9"])) * draw(st.integers(1, 300_000))
        body = {f: draw(st.sampled_from(_VALUES)) for f in draw(st.lists(st.sampled_from(_FIELDS), max_size=3))}
        if draw(st.booleans()):
            body[draw(st.sampled_from(_FIELDS))] = huge
            records[draw(st.sampled_from(_MACS))] = body
        else:
            records[huge] = body
    text = json.dumps(records, indent=draw(st.sampled_from([None, 2])))
    if draw(st.booleans()):  # a huge token inserted anywhere: a string, a number, nesting
        big = draw(st.sampled_from(['"%s"' % ("9" * 200_000), '"%s"' % ("a\\\\" * 100_000), "1" * 5000,
                                    "[" * 5000, '"' + "x" * 100_000]))
        at = draw(st.integers(0, len(text)))
        text = text[:at] + big + text[at:]
    if draw(st.booleans()):  # a hole or a duplicate
        a, b = sorted((draw(st.integers(0, len(text))), draw(st.integers(0, len(text)))))
        text = text[:a] + draw(st.sampled_from(["", text[a:b], ", ", '"port": 1, "port": 2'])) + text[b:]
    return text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_hosts_text())
def test_hosts_parser_fuzz(text):
    def call():
        try:
            parse_hosts(text, "fuzz.json")
        except ConfigError as exc:
            _one_line(exc, "fuzz.json")
    _bounded(call, text)


# -- varpd.toml / varpd.yaml --------------------------------------------------------------------
_TOML = ["[daemon]\n", "[[overlays]]\n", "[overlays.properties]\n", 'name = "vx23"\n', "vni = 23\n",
         'search = "direct"\n', "reconcile_interval = inf\n", "cache_ttl = nan\n", "negative_ttl = -1\n",
         'state_dir = "/etc/hostname"\n', 'log_level = "loud"\n', '"vxlan/listen_ip" = "192.0.2.1"\n',
         "vni = " + "9" * 5000 + "\n", "a = " + "[" * 3000 + "\n", '"\\u0000" = 1\n', '"a\\nb" = 1\n', "= =\n",
         "x = 1979-05-27T07:32:00Z\n", 'admin_tcp = "0.0.0.0:1"\n', "persist = true\n", "\n"]
_YAML = ["daemon:\n", "  log_level: info\n", "  log_level: debug\n", "overlays:\n", "- name: vx23\n",
         "  vni: 23\n", "  search: direct\n", "  vni: 24\n", "- {name: vx23, vni: 1, search: direct}\n",
         "  reconcile_interval: .inf\n", "x: &a [1, 2]\n", "y: [*a, *a, *a]\n", "<<: {a: 1}\n", "? [a]\n: 1\n",
         "a: " + "[" * 3000 + "\n", "b: !!binary AAAA\n", "c: !!python/object:os.system x\n", "\t\n", "- \n",
         "d: 2001-12-14\n", "e: " + "1" * 5000 + "\n", "\n"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from([".toml", ".yaml"]), data=st.data())
def test_config_loader_fuzz(tmp_path, suffix, data):
    parts = data.draw(st.lists(st.sampled_from(_TOML if suffix == ".toml" else _YAML)
                               | st.text(max_size=12), max_size=14))
    text = "".join(parts)
    path = tmp_path / f"varpd{suffix}"
    raw = text.encode("utf-8", "surrogatepass")
    path.write_bytes(raw)

    def call():
        try:
            load_config(path)
        except ConfigError as exc:
            _one_line(exc, str(path))
    _bounded(call, text)
