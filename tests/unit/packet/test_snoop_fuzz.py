"""Hypothesis fuzz of the pcap/pcapng reader and the VXLAN decoder: no input makes a traceback.

Mutations (overwritten bytes, cuts) of valid pcap and pcapng files, and arbitrary bytes after a
valid underlay header, with any wire length. Runs in a subprocess under RLIMIT_AS (_tshark), so a
reader that believes a huge length fails here instead of exhausting the machine. The only
acceptable failure of a file is CaptureFileError; a summary is never "undecodable".
"""
from __future__ import annotations

import pytest

from _tshark import run_capped

pytest.importorskip("hypothesis")
pytest.importorskip("scapy.all", reason="scapy (test extras) writes the seed captures")

FUZZ = r'''
import io, json, struct, sys
from hypothesis import HealthCheck, given, settings, strategies as st
from varpd.packet.pcapfile import CaptureFileError, CaptureReader
from varpd.packet.vxlan_summary import OuterFragments, format_summary, summarize, summary_to_dict

seeds = [open(p, "rb").read() for p in sys.argv[1:]]


def underlay(inner):
    """A well-formed Ethernet/IPv4/UDP/VXLAN frame around inner, so the fuzz reaches the inner decoders."""
    udp = struct.pack("!HHHH", 51234, 4789, 16 + len(inner), 0) + b"\x08\0\0\0\0\0\x17\0" + inner
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, b"\xc0\0\2\1", b"\xc0\0\2\2")
    return bytes(12) + b"\x08\x00" + ip + udp


def check(summary):
    if summary is not None:
        assert "undecodable" not in (summary.malformed or ""), summary
        assert "\n" not in format_summary(summary)
        json.dumps(summary_to_dict(summary))


common = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "1500")), deadline=None,
                  database=None, derandomize=True, suppress_health_check=list(HealthCheck))


@common
@given(st.sampled_from(seeds), st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=12),
       st.integers(0, 1 << 20))
def files(seed, edits, cut):
    data = bytearray(seed)
    for pos, value in edits:
        data[pos % len(data)] = value
    data = bytes(data[:cut % (len(data) + 1)])
    fragments = OuterFragments()
    try:
        for record in CaptureReader(io.BytesIO(data)):
            check(summarize(record.frame, wire_len=record.wire_len, timestamp=record.timestamp,
                            fragments=fragments))
    except CaptureFileError:
        pass


@common
@given(st.binary(min_size=12, max_size=12), st.sampled_from([0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8, 0x0042]),
       st.binary(max_size=200), st.integers(0, 70000), st.booleans())
def frames(macs, ethertype, tail, wire_len, wrapped):
    inner = macs + struct.pack("!H", ethertype) + tail
    frame = underlay(inner) if wrapped else inner
    check(summarize(frame, wire_len=wire_len or None, fragments=OuterFragments()))


files()
frames()
print("fuzzed")
'''


def test_reader_and_decoder_never_raise_on_mutated_captures(tmp_path):
    from scapy.all import PcapNgWriter, wrpcap

    from test_snoop_hostile import SHB, cases, cooked2, epb, frame, idb, spb
    frames = [p for pkts in cases().values() for p in pkts]
    pcap, pcapng, mixed = tmp_path / "seed.pcap", tmp_path / "seed.pcapng", tmp_path / "mixed.pcapng"
    wrpcap(str(pcap), frames)
    writer = PcapNgWriter(str(pcapng))
    for p in frames[:10]:
        writer.write(p)
    writer.close()
    mixed.write_bytes(SHB + idb(1) + idb(276, tsresol=9) + epb(0, frame()) + spb(frame())
                      + epb(1, cooked2(frame()), ticks=2**64 - 1))
    done = run_capped(["-c", FUZZ, str(pcap), str(pcapng), str(mixed)], timeout=900)
    assert done.returncode == 0 and done.stdout.strip() == "fuzzed", done.stdout[-3000:] + done.stderr[-3000:]
