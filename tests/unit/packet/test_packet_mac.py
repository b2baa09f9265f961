import pytest

from varpd.packet import (BROADCAST_MAC, PacketError, bytes_to_mac, is_multicast_mac,
                          mac_to_bytes, normalize_mac)


@pytest.mark.parametrize("text", ["AA:bb:CC:dd:EE:ff", "aa-bb-cc-dd-ee-ff", "aa:bb:cc:dd:ee:ff"])
def test_accepts_case_and_separators(text: str) -> None:
    assert mac_to_bytes(text) == bytes.fromhex("aabbccddeeff")
    assert normalize_mac(text) == "aa:bb:cc:dd:ee:ff"


def test_bytes_round_trip() -> None:
    assert bytes_to_mac(b"\x00\x01\x0a\xff\x10\x20") == "00:01:0a:ff:10:20"


@pytest.mark.parametrize("bad", ["", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "aa:bb-cc:dd:ee:ff",
                                 "gg:bb:cc:dd:ee:ff", "aabbccddeeff", "a:b:c:d:e:f",
                                 " aa:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:ff\n"])
def test_bad_strings_name_the_value(bad: str) -> None:
    with pytest.raises(PacketError) as info:
        mac_to_bytes(bad)
    assert repr(bad) in str(info.value)


def test_non_string_and_bad_length() -> None:
    with pytest.raises(PacketError):
        mac_to_bytes(None)  # type: ignore[arg-type]
    with pytest.raises(PacketError):
        bytes_to_mac(b"\x00" * 5)
    with pytest.raises(PacketError):
        is_multicast_mac(b"\x01")


def test_multicast() -> None:
    assert is_multicast_mac(BROADCAST_MAC)
    assert is_multicast_mac("33:33:00:00:00:01")
    assert is_multicast_mac(b"\x01\x00\x5e\x00\x00\x01")
    assert not is_multicast_mac("52:54:00:12:34:56")
    assert not is_multicast_mac(b"\x02" + bytes(5))
