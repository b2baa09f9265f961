"""MAC address conversions: our API speaks "aa:bb:cc:dd:ee:ff", the wire speaks 6 bytes."""

from __future__ import annotations

import re

from varpd.packet.errors import PacketError

BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"

# Six hex pairs with one consistent separator (":" or "-").
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}")


def mac_to_bytes(mac: str) -> bytes:
    """Parse a MAC string in any case with ':' or '-' separators."""
    if not isinstance(mac, str) or _MAC_RE.fullmatch(mac) is None:
        raise PacketError(f"invalid MAC address {mac!r}")
    return bytes.fromhex(mac.replace("-", "").replace(":", ""))


def bytes_to_mac(raw: bytes) -> str:
    """Render 6 wire bytes in the canonical lowercase colon form."""
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != 6:
        raise PacketError(f"MAC address must be 6 bytes, got {raw!r}")
    return ":".join(f"{b:02x}" for b in raw)


def normalize_mac(mac: str) -> str:
    """Canonical form, so MACs from config, backends and the wire compare equal."""
    return bytes_to_mac(mac_to_bytes(mac))


def is_multicast_mac(mac: str | bytes) -> bool:
    """True for group addresses (I/G bit set), which includes broadcast."""
    raw = mac_to_bytes(mac) if isinstance(mac, str) else mac
    if len(raw) != 6:
        raise PacketError(f"MAC address must be 6 bytes, got {mac!r}")
    return bool(raw[0] & 0x01)
