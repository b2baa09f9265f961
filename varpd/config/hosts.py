"""hosts.json, the illumos files-backend format, → a validated `Mapping`.

Shared by every backend whose records have this shape (files, etcd, http).
Errors are one line naming the file, the line, the MAC key and the field,
because an operator editing a 10,000-line file needs to know where to look.
Line numbers are only computed when reporting an error, so loading stays fast.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from varpd.backend.errors import ConfigError
from varpd.model import Destination, Mapping, MappingRecord
from varpd.packet.errors import PacketError
from varpd.packet.mac import normalize_mac


def _optional_ip(value: Any, version: int) -> Any:
    if value in ("", None):
        return None
    addr = ipaddress.ip_address(str(value))
    if addr.version != version:
        raise ValueError(f"{value!r} is not an IPv{version} address")
    return addr


class HostRecordModel(BaseModel):
    """One record of hosts.json: where a VNIC MAC lives and which overlay IPs it owns."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int = Field(ge=1, le=65535)
    arp: ipaddress.IPv4Address | None = None
    ndp: ipaddress.IPv6Address | None = None
    dhcp_proxy: str | None = Field(default=None, alias="dhcp-proxy")

    @field_validator("ip", mode="before")
    @classmethod
    def _underlay(cls, value: Any) -> Any:
        addr = ipaddress.ip_address(str(value))
        if addr.is_multicast or addr.is_unspecified:
            raise ValueError(f"{value!r} is not a unicast underlay address")
        if addr.version == 6 and addr.ipv4_mapped is not None:
            raise ValueError(f"{value!r} is IPv4-mapped: write the IPv4 address")
        return addr

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not an integer")
        if not 1 <= value <= 65535:
            raise ValueError(f"{value} is outside 1-65535")
        return value

    @field_validator("arp", mode="before")
    @classmethod
    def _arp(cls, value: Any) -> Any:
        return _optional_ip(value, 4)

    @field_validator("ndp", mode="before")
    @classmethod
    def _ndp(cls, value: Any) -> Any:
        return _optional_ip(value, 6)

    @field_validator("dhcp_proxy", mode="before")
    @classmethod
    def _proxy(cls, value: Any) -> Any:
        if value in ("", None):
            return None
        try:
            return normalize_mac(str(value))
        except PacketError as exc:
            raise ValueError(str(exc)) from None

    def to_record(self, mac: str) -> MappingRecord:
        return MappingRecord(mac, Destination(self.ip, self.port), self.arp, self.ndp, self.dhcp_proxy)


class _Located:
    """Finds the line of a key or field in the raw text, only when an error must be reported."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source

    def line_of(self, key: str, field: str | None = None) -> int | None:
        m = re.search(r'"%s"\s*:' % re.escape(key), self.text)
        if m is None:
            return None
        start = m.start()
        if field is not None:
            end = self.text.find("}", start)
            f = re.compile(r'"%s"\s*:' % re.escape(field)).search(self.text, start, end if end > 0 else len(self.text))
            if f is not None:
                start = f.start()
        return self.text.count("\n", 0, start) + 1

    def error(self, message: str, key: str | None = None, field: str | None = None) -> ConfigError:
        line = self.line_of(key, field) if key is not None else None
        where = f"{self.source}:{line}" if line else self.source
        return ConfigError(f"{where}: {message}")


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _describe(err: dict[str, Any]) -> tuple[str, str]:
    """(field name, reason) of one pydantic error, in hosts.json terms."""
    field = str(err["loc"][0]) if err["loc"] else "?"
    if field == "dhcp_proxy":
        field = "dhcp-proxy"
    if err["type"] == "missing":
        return field, f"missing required field '{field}'"
    if err["type"] == "extra_forbidden":
        return field, f"unknown field '{field}' (reserved)"
    msg = err["msg"].removeprefix("Value error, ")
    return field, f"field '{field}': {msg} (got {err.get('input')!r})"


def parse_hosts(text: str, source: str = "<string>") -> Mapping:
    loc = _Located(text, source)
    try:
        raw = json.loads(text, object_pairs_hook=_pairs_no_duplicates)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except _Duplicate as dup:
        lines = [text.count("\n", 0, m.start()) + 1 for m in re.finditer(r'"%s"\s*:' % re.escape(dup.key), text)]
        raise ConfigError(f"{source}: duplicate key {dup.key} (lines {', '.join(map(str, lines))})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be an object keyed by MAC address")
    records: dict[str, MappingRecord] = {}
    owner_of_ip: dict[Any, str] = {}
    key_of: dict[str, str] = {}
    for key, body in raw.items():
        try:
            mac = normalize_mac(key)
        except PacketError:
            raise loc.error(f"{key!r} is not a MAC address", key) from None
        if mac in records:
            raise loc.error(f"duplicate MAC {mac} (keys {key_of[mac]!r} and {key!r})", key)
        if not isinstance(body, dict):
            raise loc.error(f"{mac}: the value must be an object with 'ip' and 'port'", key)
        try:
            rec = HostRecordModel.model_validate(body).to_record(mac)
        except ValidationError as exc:
            field, reason = _describe(exc.errors()[0])
            raise loc.error(f"{mac}: {reason}", key, field if field in body else None) from None
        for ip, name in ((rec.arp, "arp"), (rec.ndp, "ndp")):
            if ip is None:
                continue
            other = owner_of_ip.get(ip)
            if other is not None:
                raise loc.error(f"{mac}: field '{name}': {ip} is already claimed by {other}", key, name)
            owner_of_ip[ip] = mac
        records[mac] = rec
        key_of[mac] = key
    return Mapping.of(records.values())


def load_hosts(path: str | Path) -> Mapping:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_hosts(text, str(path))
