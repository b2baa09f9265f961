"""hosts.json, the illumos files-backend format (overlay_files(5)), → a validated `Mapping`.

Shared by every backend whose records have this shape (files, etcd, http).  The
file is one JSON object keyed by VNIC MAC; each value is an object::

    {
      "de:ad:be:ef:00:01": {"ip": "192.0.2.2", "port": 4789,
                            "arp": "10.55.55.3", "ndp": "fe80::4",
                            "dhcp-proxy": "de:ad:be:ef:00:00"}
    }

`ip` (underlay IPv4/IPv6) and `port` are required; `arp` (overlay IPv4), `ndp`
(overlay IPv6) and `dhcp-proxy` (MAC) are optional, an empty string meaning
absent.  Other keys are reserved and refused.

Errors are ONE line naming the file, the line, the MAC key and the field,
because an operator editing a 10,000-line file needs to know where to look::

    hosts.json:7: de:ad:be:ef:00:01: field 'port': 70000 is above 65535
    hosts.json:12:5: invalid JSON: Expecting ',' delimiter
    hosts.json: duplicate MAC de:ad:be:ef:00:01 (lines 2 and 14)

Line numbers are computed (by a small tokenizer, `_keys`) only when an error is
reported, so the success path is json.loads plus one validation per record; the
error path costs no memory beyond the text, and a bad value is quoted by its
first 64 characters at most (a 5 MB `ip` string is not copied into the log).
"""

from __future__ import annotations

import ipaddress
import json
import re
import reprlib
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from varpd.backend.errors import ConfigError
from varpd.config.reading import MiB, read_text
from varpd.model import AddressIndex, Destination, Mapping, MappingRecord
from varpd.model.addresses import check_overlay_ip, check_unicast_mac, check_vtep, mac_problem, overlay_int_ok
from varpd.nogc import collector_paused

try:  # the packet layer owns MAC parsing; fall back to a private copy if it is absent
    from varpd.packet.mac import normalize_mac as _packet_normalize_mac
    from varpd.packet.errors import PacketError as _MacError
except ImportError:  # pragma: no cover - only while varpd.packet is being written
    _packet_normalize_mac = None
    _MacError = ValueError

__all__ = ["FIELDS", "MAX_SIZE", "HostRecordModel", "describe_validation_error", "load_hosts", "normalize_mac", "parse_hosts",
           "record_body"]

FIELDS = ("ip", "port", "arp", "ndp", "dhcp-proxy")
MAX_SIZE = 256 * MiB  # the default limit of a file: a million records with every field is ~150 MiB
_FIELD_SET = frozenset(FIELDS)

_CANONICAL_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_ANY_MAC = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}")


def normalize_mac(mac: str) -> str:
    """'DE-AD-BE-EF-00-01' → 'de:ad:be:ef:00:01'; ValueError if `mac` is not a MAC."""
    if isinstance(mac, str) and _CANONICAL_MAC.fullmatch(mac):
        return mac  # the common case, without the packet layer's byte round trip
    if _packet_normalize_mac is not None:
        try:
            return _packet_normalize_mac(mac)
        except _MacError:
            raise ValueError(f"{_short(mac)} is not a MAC address") from None
    if not isinstance(mac, str) or not _ANY_MAC.fullmatch(mac):  # pragma: no cover
        raise ValueError(f"{_short(mac)} is not a MAC address")
    return mac.lower().replace("-", ":")  # pragma: no cover


def _parse_v4(text: str) -> ipaddress.IPv4Address:
    try:  # inet_pton: strict dotted quad (no leading zeros, no spaces), 10x faster than ipaddress
        return ipaddress.IPv4Address(int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big"))
    except OSError:
        raise ValueError(f"{_short(text)} is not an IPv4 address") from None


def _parse_v6(text: str) -> ipaddress.IPv6Address:
    try:  # no zone index ("%eth0"): meaningless in a mapping
        return ipaddress.IPv6Address(int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big"))
    except OSError:
        raise ValueError(f"{_short(text)} is not an IPv6 address") from None


@lru_cache(maxsize=4096)
def _underlay_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse an underlay (VTEP) address; cached, since many VNICs share one VTEP."""
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = _parse_v4(text)
    except ValueError:
        try:
            addr = _parse_v6(text)
        except ValueError:
            raise ValueError(f"{_short(text)} is not an IPv4 or IPv6 address") from None
    return check_vtep(addr)


_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 64
_QUOTE.maxlong = 64


def _short(value: Any) -> str:
    """repr(value) of at most about 64 characters: a bad value is quoted, never copied whole."""
    return _QUOTE.repr(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object", _Body: "an object"}.get(type(value), type(value).__name__)


def _check_ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected an IP address string, got {_kind(value)} {_short(value)}")
    if value == "":
        raise ValueError("empty: the underlay address is required")
    return _underlay_ip(value)


def _check_port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {_kind(value)} {_short(value)}")
    if value > 65535:
        raise ValueError(f"{value} is above 65535")
    if value < 1:
        raise ValueError(f"{value} is below 1")
    return value


def _check_optional_ip(value: Any, version: int) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected an IPv{version} address string, got {_kind(value)} {_short(value)}")
    return check_overlay_ip(_parse_v4(value) if version == 4 else _parse_v6(value))


def _check_proxy(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a MAC address string, got {_kind(value)} {_short(value)}")
    return check_unicast_mac(normalize_mac(value))


class _Body(tuple):
    """A record body already checked by the fast path: (interned destination, arp int, ndp int, dhcp-proxy).

    json.loads hands every record object to `_object_hook` as it closes, which turns
    it into this at once: a million records never exist as dicts of strings all at
    the same time (that peak was 1 KB per record, the compact record is 300 bytes)."""

    __slots__ = ()


@lru_cache(maxsize=4096)
def _destination(ip: str, port: int) -> Destination:
    return Destination.of(_underlay_ip(ip), port)


def _overlay_int(text: Any, family: int) -> int:
    """The integer of overlay address `text` (TypeError if not a str, ValueError if bad or not unicast)."""
    try:
        n = _from_bytes(_pton(family, text), "big")
    except OSError:
        raise ValueError("bad address") from None
    if not overlay_int_ok(n, 4 if family == _AF_INET else 6):
        raise ValueError("not a unicast address")
    return n


def _compact_body(body: dict[str, Any]) -> _Body:
    """The success path of HostRecordModel.model_validate(body), without pydantic.

    Uses the very checks the model's validators use; any ValueError (or an unknown
    field) means the caller re-validates with the model, for its error message.
    """
    if len(body) > 5 or not _FIELD_SET.issuperset(body):
        raise ValueError("unknown field")
    ip, port = body["ip"], body["port"]
    if type(ip) is not str or not ip or type(port) is not int or not 1 <= port <= 65535:
        raise ValueError("unusual ip or port")
    arp, ndp, proxy = body.get("arp"), body.get("ndp"), body.get("dhcp-proxy")
    if arp:
        arp = _overlay_int(arp, _AF_INET)
    elif arp is not None and arp != "":
        raise ValueError("arp: 0, false, [] or {} is not 'absent'")
    if ndp:
        ndp = _overlay_int(ndp, _AF_INET6)
    elif ndp is not None and ndp != "":
        raise ValueError("ndp: 0, false, [] or {} is not 'absent'")
    return _Body((_destination(ip, port), arp or None, ndp or None, _check_proxy(proxy)))


def _fast_record(mac: str, body: dict[str, Any]) -> MappingRecord:
    """`body` as the record of `mac` by the fast path (ValueError, KeyError or TypeError: ask the model)."""
    return MappingRecord.compact(mac, *_compact_body(body))


_from_bytes, _pton, _AF_INET, _AF_INET6 = int.from_bytes, socket.inet_pton, socket.AF_INET, socket.AF_INET6


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
        return _check_ip(value)

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> Any:
        return _check_port(value)

    @field_validator("arp", mode="before")
    @classmethod
    def _arp(cls, value: Any) -> Any:
        return _check_optional_ip(value, 4)

    @field_validator("ndp", mode="before")
    @classmethod
    def _ndp(cls, value: Any) -> Any:
        return _check_optional_ip(value, 6)

    @field_validator("dhcp_proxy", mode="before")
    @classmethod
    def _proxy(cls, value: Any) -> Any:
        return _check_proxy(value)

    def to_record(self, mac: str) -> MappingRecord:
        """The model as the backend-neutral record of `mac` (already normalised by the caller)."""
        return MappingRecord(mac, Destination.of(self.ip, self.port), self.arp, self.ndp, self.dhcp_proxy)


def record_body(rec: MappingRecord) -> dict[str, Any]:
    """`rec` as the hosts.json record its MAC is the key of (absent fields left out): the one
    form the etcd values, the mapping API and test fixtures write, so all of them read back alike."""
    body: dict[str, Any] = {"ip": str(rec.dest.ip), "port": rec.dest.port}
    if rec.arp is not None:
        body["arp"] = str(rec.arp)
    if rec.ndp is not None:
        body["ndp"] = str(rec.ndp)
    if rec.dhcp_proxy is not None:
        body["dhcp-proxy"] = rec.dhcp_proxy
    return body


def describe_validation_error(err: dict[str, Any]) -> tuple[str, str]:
    """(field name, reason) of one pydantic error, in hosts.json terms (used by etcd and http too)."""
    field = str(err["loc"][0]) if err["loc"] else "?"
    if field == "dhcp_proxy":
        field = "dhcp-proxy"
    if err["type"] == "missing":
        return field, f"missing required field '{field}'"
    if err["type"] == "extra_forbidden":
        return field, f"unknown field '{field}' (reserved; known fields: {', '.join(FIELDS)})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] != "value_error":  # pydantic's own wording: show what it got
        msg = f"{msg} (got {_short(err.get('input'))})"
    return field, f"field '{field}': {msg}"


# -- locating keys in the raw text (error path only) --------------------------------------

# Possessive (`++`, `*+`): a string token is matched without a backtracking point per
# character; the plain pattern cost ~120 bytes of regex stack per character of a string.
_TOKEN = re.compile(r'"(?:[^"\\\n]++|\\.)*+"|[{}\[\]:]')


def _keys(text: str) -> Iterator[tuple[int, str, int]]:
    """(depth, key, line) of every object key in order; depth 1 is a MAC, depth 2 a field of its record.

    A tokenizer, not a parser: it assumes text that json.loads accepted (or that
    is valid up to where it failed), which is all the error path needs.  It holds
    no more than one key at a time, so it costs the same memory for any file.
    """
    depth, line, pos = 0, 1, 0
    last: tuple[int, int] | None = None  # the span of the last string token
    for m in _TOKEN.finditer(text):
        start = m.start()
        if text[start] == '"':
            last = (start, m.end())
            continue
        line += text.count("\n", pos, start)
        pos = start
        tok = text[start]
        if tok == ":":
            if last is not None and depth in (1, 2):
                raw = text[last[0]:last[1]]
                try:
                    key = json.loads(raw)
                except ValueError:
                    key = raw[1:-1]
                yield depth, key, line
        else:
            depth += 1 if tok in "{[" else -1
        last = None


class _Reporter:
    """Builds the one-line ConfigError, scanning the text for line numbers when (and only when) asked."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source

    def line(self, index: int, field: str | None = None) -> int | None:
        """The line of the `index`-th MAC key (of its `field` when the record has one); None past the end."""
        seen = -1
        found: int | None = None
        for depth, key, line in _keys(self.text):
            if depth == 1:
                if found is not None:
                    break
                seen += 1
                if seen == index:
                    found = line
                    if field is None:
                        break
            elif found is not None and key == field:
                return line
        return found

    def error(self, message: str, index: int | None = None, field: str | None = None) -> ConfigError:
        line = self.line(index, field) if index is not None else None
        where = f"{self.source}:{line}" if line else self.source
        return ConfigError(f"{where}: {message}")

    def duplicate(self, name: str) -> ConfigError:
        """Explain the duplicate key `name` that json.loads' hook saw (a MAC twice, or a field twice in a record).

        The hook fires on the first object to close with a repeat: a record (depth 2)
        closes before the top level does, so a repeated field is looked for first.
        """
        macs: list[int] = []
        mac_key, fields = "", []
        for depth, key, line in _keys(self.text):
            if depth == 1:
                mac_key, fields = key, []
                if key == name:
                    macs.append(line)
            elif key == name:
                fields.append(line)
                if len(fields) == 2:
                    owner = mac_key if len(mac_key) <= 64 else _short(mac_key)
                    return ConfigError(f"{self.source}:{line}: {owner}: duplicate field {_short(name)} "
                                       f"(lines {fields[0]} and {line})")
        if len(macs) >= 2:
            try:
                mac = normalize_mac(name)
            except ValueError:
                mac = _short(name)
            return ConfigError(f"{self.source}: duplicate MAC {mac} (lines {macs[0]} and {macs[1]})")
        return ConfigError(f"{self.source}: a key appears twice in one object: {_short(name)}")


class _Duplicate(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise _Duplicate(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


def _object_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _Body:
    """Every JSON object as it closes: a good record body becomes a `_Body`, anything else a dict."""
    obj = _no_duplicates(pairs)
    if len(obj) <= 5:
        try:
            return _compact_body(obj)
        except (ValueError, KeyError, TypeError):
            pass
    return obj


def parse_hosts(text: str, source: str = "<string>") -> Mapping:
    """Validate a whole hosts.json text; ConfigError (one line, with file:line) on the first problem.

    Refused besides bad records: a MAC given twice (in any spelling), two MACs
    claiming the same `arp` or `ndp` address, a top level that is not an object.
    """
    # Hundreds of thousands of small objects: the cyclic GC would rescan them over and over
    # (a third of the time) though none of them can form a cycle.
    with collector_paused():
        return _parse_hosts(text, source)


def _parse_hosts(text: str, source: str) -> Mapping:
    report = _Reporter(text, source)
    try:
        raw = json.loads(text, object_pairs_hook=_object_hook)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except _Duplicate as dup:
        raise report.duplicate(dup.name) from None
    except (ValueError, RecursionError) as exc:  # an int of > 4300 digits, nesting too deep
        raise ConfigError(f"{source}: invalid JSON: {exc}") from None
    if isinstance(raw, _Body):
        raise ConfigError(f"{source}: the top level must be an object keyed by MAC address, not one record")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be an object keyed by MAC address, not {_kind(raw)}")
    records: dict[str, MappingRecord] = {}
    by_ip = AddressIndex()
    tables = {"arp": by_ip.v4, "ndp": by_ip.v6}
    v4, v6 = by_ip.v4, by_ip.v6
    validate = HostRecordModel.model_validate
    compact = MappingRecord.compact

    def index_of(mac: str) -> int:  # error path only: records are kept in the file's order
        return next(i for i, m in enumerate(records) if m == mac)

    for index, (key, body) in enumerate(raw.items()):
        try:
            mac = normalize_mac(key)
        except ValueError:
            raise report.error(f"{_short(key)} is not a MAC address", index) from None
        problem = mac_problem(mac)
        if problem is not None:
            raise report.error(problem, index)
        if mac in records:
            first = report.line(index_of(mac))
            raise ConfigError(f"{source}: duplicate MAC {mac} (lines {first} and {report.line(index)})")
        if body.__class__ is _Body:
            rec = compact(mac, *body)
        elif not isinstance(body, dict):
            raise report.error(f"{mac}: the value must be an object with 'ip' and 'port', not {_kind(body)}", index)
        else:
            try:  # the model says what is wrong (or accepts an unusual spelling the fast path skipped)
                rec = validate(body).to_record(mac)
            except ValidationError as exc:
                field, reason = describe_validation_error(exc.errors()[0])
                raise report.error(f"{mac}: {reason}", index, field) from None
        if rec.arp_int is not None and v4.setdefault(rec.arp_int, rec) is not rec:
            _claimed(report, rec, "arp", tables, index, index_of)
        if rec.ndp_int is not None and v6.setdefault(rec.ndp_int, rec) is not rec:
            _claimed(report, rec, "ndp", tables, index, index_of)
        records[mac] = rec
    return Mapping(records, by_ip)


def _claimed(report: _Reporter, rec: MappingRecord, name: str, tables: dict, index: int, index_of) -> None:
    ip = getattr(rec, name)
    other = tables[name][int(ip)]
    raise report.error(f"{rec.mac}: field '{name}': {ip} is already claimed by {other.mac} "
                       f"(line {report.line(index_of(other.mac), name)})", index, name)


def load_hosts(path: str | Path, max_size: int = MAX_SIZE) -> Mapping:
    """Read and validate a hosts.json file (regular, at most `max_size` bytes); ConfigError names the file."""
    _, text = read_text(path, max_size)
    return parse_hosts(text, str(path))
