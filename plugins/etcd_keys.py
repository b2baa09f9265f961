"""The etcd backend's key layout and its pure logic: keys, values, watch events → mapping changes.

No I/O and no etcd client here, so all of it is unit-tested without a server.

Layout: ``<prefix>/<vni>/<mac>`` → a JSON object with the fields of one hosts.json
record (``ip``, ``port``, ``arp``, ``ndp``, ``dhcp-proxy``), validated by the same
pydantic model as the files backend.  An overlay reads (and watches) only
``<prefix>/<vni>/``; keys of other VNIs are never seen, and a key that is not
``<prefix>/<vni>/<mac>`` is ignored with one log line.

Conflicts, which a single file can refuse as a whole but a shared store cannot:
two keys naming the same MAC (``DE:AD:…`` and ``de:ad:…``) or claiming the same
overlay IP.  The key created first (lowest create_revision, then the key) wins and
the other is ignored (logged once) until the winner goes; this does not depend on
the order events arrive in, so every host computes the same mapping.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Iterable

from pydantic import ValidationError

from varpd import json_input
from varpd.config.hosts import HostRecordModel, describe_validation_error, record_body
from varpd.model import Mapping, MappingChange, MappingRecord
from varpd.model.addresses import mac_problem
from varpd.packet.errors import PacketError
from varpd.packet.mac import normalize_mac

IPAddress = IPv4Address | IPv6Address

PUT = "put"
DELETE = "delete"


def normalize_prefix(prefix: str) -> str:
    """'/varpd/' → '/varpd'; '' or '/' → '' (keys are then '/<vni>/<mac>')."""
    return str(prefix).rstrip("/")


def vni_prefix(prefix: str, vni: int) -> str:
    """The key range one overlay reads and watches (trailing slash: VNI 23 never matches 230)."""
    return f"{normalize_prefix(prefix)}/{int(vni)}/"


def key_for(prefix: str, vni: int, mac: str) -> str:
    """The key of one VNIC (the MAC in canonical form)."""
    return f"{vni_prefix(prefix, vni)}{normalize_mac(mac)}"


class KeyError_(ValueError):
    """A key under the overlay's range that is not <prefix>/<vni>/<mac>."""


def parse_key(key: str | bytes, prefix: str, vni: int) -> str | None:
    """The canonical MAC of `key`; None for keys outside this overlay's range (other VNIs, other prefixes).

    Raises KeyError_ (one line) for a key inside the range that is not a MAC.
    """
    if isinstance(key, bytes):
        key = key.decode("utf-8", errors="replace")
    base = vni_prefix(prefix, vni)
    if not key.startswith(base):
        return None
    rest = key[len(base):]
    if not rest:
        raise KeyError_(f"key {key}: no MAC after {base}")
    if "/" in rest:
        raise KeyError_(f"key {key}: expected {base}<mac>, got extra path {rest!r}")
    try:
        mac = normalize_mac(rest)
    except PacketError:
        raise KeyError_(f"key {key}: {rest!r} is not a MAC address") from None
    problem = mac_problem(mac)
    if problem is not None:
        raise KeyError_(f"key {key}: {problem}")
    return mac


def parse_value(key: str, mac: str, value: bytes | str) -> MappingRecord:
    """Validate one value with the hosts.json record model; ValueError with hosts.json's messages."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"key {key}: the value is not UTF-8") from None
    try:
        body = json_input.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"key {key}: invalid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
    if not isinstance(body, dict):
        raise ValueError(f"key {key}: the value must be an object with 'ip' and 'port'")
    try:
        return HostRecordModel.model_validate(body).to_record(mac)
    except ValidationError as exc:
        _, reason = describe_validation_error(exc.errors()[0])
        raise ValueError(f"key {key}: {reason}") from None


def encode_value(rec: MappingRecord) -> str:
    """A record as the JSON value the backend reads (what `varpd register` writes)."""
    return json.dumps(record_body(rec), sort_keys=True)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One etcd event, reduced to what matters: PUT (key, value, create revision) or DELETE (key)."""

    kind: str  # PUT or DELETE
    key: str
    value: bytes | str | None = None
    create_revision: int = 0


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    rec: MappingRecord
    order: tuple[int, str]  # (create_revision, key): lower wins a conflict

    def claims(self) -> list[Any]:
        out: list[Any] = [("mac", self.rec.mac)]
        out += [("ip", ip) for ip in (self.rec.arp, self.rec.ndp) if ip is not None]
        return out


class MappingState:
    """The overlay's keys and the mapping they make, updated incrementally from watch events.

    `apply()` returns exactly `old_mapping.diff(new_mapping)` without rebuilding the
    whole table: only the records sharing a MAC or IP with a changed key (a
    "component", usually one record) are re-decided.
    """

    def __init__(self, prefix: str, vni: int) -> None:
        self.prefix = prefix
        self.vni = vni
        self.entries: dict[str, _Entry] = {}  # key → valid entry (accepted or not)
        self.holders: dict[Any, set[str]] = {}  # ("mac", m) / ("ip", ip) → keys claiming it
        self.by_mac: dict[str, MappingRecord] = {}  # the accepted mapping
        self.by_ip: dict[IPAddress, MappingRecord] = {}
        self.owner_key: dict[str, str] = {}  # accepted mac → its key
        self.bad: dict[str, str] = {}  # key → why its key or value is invalid
        self.conflicts: dict[str, str] = {}  # key → which MAC or IP another key already holds

    # -- queries ---------------------------------------------------------------------
    @property
    def problems(self) -> dict[str, str]:
        """Every key ignored right now, and why (one line naming the key and the field)."""
        return {**self.bad, **self.conflicts}

    def mapping(self) -> Mapping:
        return Mapping(dict(self.by_mac), dict(self.by_ip))

    def __len__(self) -> int:
        return len(self.by_mac)

    # -- updates ---------------------------------------------------------------------
    def apply(self, events: Iterable[WatchEvent]) -> tuple[MappingChange, list[str]]:
        """Apply events in order; → (the mapping's difference, problems that are new since the last call)."""
        touched: set[Any] = set()
        before_problems = dict(self.problems)
        for ev in events:
            try:
                mac = parse_key(ev.key, self.prefix, self.vni)
            except KeyError_ as exc:
                self._drop(ev.key, touched)
                if ev.kind == PUT:
                    self.bad[ev.key] = str(exc)
                else:
                    self.bad.pop(ev.key, None)
                continue
            if mac is None:
                continue  # another VNI or prefix: not ours
            self._drop(ev.key, touched)
            self.bad.pop(ev.key, None)
            self.conflicts.pop(ev.key, None)
            if ev.kind != PUT:
                continue
            try:
                rec = parse_value(ev.key, mac, ev.value if ev.value is not None else b"")
            except ValueError as exc:
                self.bad[ev.key] = str(exc)
                continue
            entry = _Entry(ev.key, rec, (int(ev.create_revision), ev.key))
            self.entries[ev.key] = entry
            for c in entry.claims():
                self.holders.setdefault(c, set()).add(ev.key)
                touched.add(c)
        change = self._decide(touched)
        new = [msg for key, msg in self.problems.items() if before_problems.get(key) != msg]
        return change, new

    def load(self, events: Iterable[WatchEvent]) -> list[str]:
        """Fill an empty state from a full read (all PUTs); → the problems found."""
        _, problems = self.apply(events)
        return problems

    def _drop(self, key: str, touched: set[Any]) -> None:
        old = self.entries.pop(key, None)
        if old is None:
            return
        for c in old.claims():
            keys = self.holders.get(c)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.holders[c]
            touched.add(c)

    def _component(self, touched: set[Any]) -> tuple[set[str], set[Any]]:
        """Every key connected to a touched MAC/IP through shared claims, and every claim involved."""
        keys: set[str] = set()
        claims: set[Any] = set()
        todo = list(touched)
        while todo:
            c = todo.pop()
            if c in claims:
                continue
            claims.add(c)
            for k in self.holders.get(c, ()):
                if k not in keys:
                    keys.add(k)
                    todo.extend(self.entries[k].claims())
        return keys, claims

    def _decide(self, touched: set[Any]) -> MappingChange:
        if not touched:
            return MappingChange()
        keys, claims = self._component(touched)
        # what the accepted mapping had in this component
        old_recs: dict[str, MappingRecord] = {}
        for c in claims:
            rec = self.by_mac.get(c[1]) if c[0] == "mac" else self.by_ip.get(c[1])
            if rec is not None:
                old_recs[rec.mac] = rec
        # the old records' other claims belong to the component too (their keys are in `keys` or gone)
        for rec in old_recs.values():
            for ip in (rec.arp, rec.ndp):
                if ip is not None:
                    claims.add(("ip", ip))
        for rec in old_recs.values():
            self.by_mac.pop(rec.mac, None)
            self.owner_key.pop(rec.mac, None)
            for ip in (rec.arp, rec.ndp):
                if ip is not None and self.by_ip.get(ip) is rec:
                    del self.by_ip[ip]
        # greedy by (create_revision, key): the first to claim a MAC or IP keeps it
        new_recs: dict[str, MappingRecord] = {}
        for entry in sorted((self.entries[k] for k in keys), key=lambda e: e.order):
            rec = entry.rec
            clash = None
            if rec.mac in self.by_mac:
                clash = f"key {entry.key}: duplicate MAC {rec.mac} (key {self.owner_key[rec.mac]} has it)"
            else:
                for ip, name in ((rec.arp, "arp"), (rec.ndp, "ndp")):
                    if ip is not None and ip in self.by_ip:
                        clash = f"key {entry.key}: field '{name}': {ip} is already claimed by " \
                                f"{self.by_ip[ip].mac}"
                        break
            self.conflicts.pop(entry.key, None)
            if clash is not None:
                self.conflicts[entry.key] = clash
                continue
            self.by_mac[rec.mac] = rec
            self.owner_key[rec.mac] = entry.key
            for ip in (rec.arp, rec.ndp):
                if ip is not None:
                    self.by_ip[ip] = rec
            new_recs[rec.mac] = rec
        upserted = tuple(rec for mac, rec in new_recs.items() if old_recs.get(mac) != rec)
        removed = tuple(rec for mac, rec in old_recs.items() if mac not in new_recs)
        return MappingChange(upserted=upserted, removed=removed)


def build_mapping(prefix: str, vni: int, events: Iterable[WatchEvent]) -> tuple[MappingState, list[str]]:
    """A fresh state from a full read of the overlay's range."""
    state = MappingState(prefix, vni)
    problems = state.load(events)
    return state, problems
