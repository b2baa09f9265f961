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
import re
from array import array
from bisect import bisect_left
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Iterable

from pydantic import ValidationError

from varpd import json_input
from varpd.config.hosts import HostRecordModel, describe_validation_error, record_body
from varpd.config.hosts import _fast_record  # shared with the hosts.json parser (same checks)
from varpd.model import AddressIndex, Mapping, MappingChange, MappingRecord
from varpd.model.addresses import mac_problem
from varpd.packet.errors import PacketError
from varpd.packet.mac import normalize_mac

from varpd_plugins.etcd_table import CowTable

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
        return _fast_record(mac, body)  # the files backend's path: no pydantic for a good record
    except (ValueError, KeyError, TypeError):
        pass
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
    """A valid key and its record: only the keys that lost a conflict are kept as these."""

    key: str
    rec: MappingRecord
    order: tuple[int, str]  # (create_revision, key): lower wins a conflict


# what a record claims: ("mac", mac), ("v4", arp as int), ("v6", ndp as int)
def _claims(rec: MappingRecord) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [("mac", rec.mac)]
    if rec.arp_int is not None:
        out.append(("v4", rec.arp_int))
    if rec.ndp_int is not None:
        out.append(("v6", rec.ndp_int))
    return out


_CANONICAL = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


class MappingState:
    """The overlay's keys and the mapping they make, updated incrementally from watch events.

    `apply()` returns exactly `old_mapping.diff(new_mapping)` without rebuilding the
    whole table: only the records sharing a MAC or IP with a changed key (a
    "component", usually one record) are re-decided.

    Compact, for a million keys: an accepted record is only in the mapping's own tables
    (copy-on-write, `varpd_plugins.etcd_table`: a snapshot costs the changes since the
    last one); its key is implied by its MAC (only a key spelt otherwise is kept, in
    `odd_keys`), and its create revision, needed only to settle a later conflict, is in
    two arrays filled by the initial read in key order (16 bytes a record) or, for keys
    put later, in `revs`.  Who holds a MAC or IP is the accepted table itself; only keys
    that lost a conflict are kept as entries, with an index of their claims.
    """

    def __init__(self, prefix: str, vni: int) -> None:
        self.prefix = prefix
        self.vni = vni
        self.base_key = vni_prefix(prefix, vni)
        self._macs = CowTable()  # the accepted mapping: mac → record
        self._v4 = CowTable()  # arp int → record
        self._v6 = CowTable()  # ndp int → record
        self.odd_keys: dict[str, str] = {}  # accepted mac → its key, when not base_key + mac
        self._rev_macs = array("Q")  # MACs (as ints, ascending) of the initial read ...
        self._rev_vals = array("q")  # ... and their keys' create revisions
        self.revs: dict[str, int] = {}  # accepted mac → create revision, for everything else
        self.losers: dict[str, _Entry] = {}  # valid keys ignored because of a conflict
        self.loser_claims: dict[tuple[str, Any], set[str]] = {}
        self.bad: dict[str, str] = {}  # key → why its key or value is invalid
        self.conflicts: dict[str, str] = {}  # key → which MAC or IP another key already holds

    # -- queries ---------------------------------------------------------------------
    @property
    def problems(self) -> dict[str, str]:
        """Every key ignored right now, and why (one line naming the key and the field)."""
        return {**self.bad, **self.conflicts}

    @property
    def by_mac(self) -> AbcMapping:
        return self._macs.view()

    def mapping(self) -> Mapping:
        """The accepted mapping as an immutable snapshot (O(changes since the last snapshot))."""
        by_ip = AddressIndex()
        by_ip.v4, by_ip.v6 = self._v4.view(), self._v6.view()  # type: ignore[assignment]
        return Mapping(self._macs.view(), by_ip)

    def __len__(self) -> int:
        return len(self._macs)

    # -- updates ---------------------------------------------------------------------
    def apply(self, events: Iterable[WatchEvent]) -> tuple[MappingChange, list[str]]:
        """Apply events in order; → (the mapping's difference, problems that are new since the last call)."""
        before_problems = dict(self.problems) if self.bad or self.conflicts else {}
        before: dict[str, MappingRecord | None] = {}  # each MAC touched → its record before the batch
        for ev in events:
            self.apply_one(ev.kind, ev.key, ev.value, ev.create_revision, before)
        upserted, removed = [], []
        macs = self._macs
        for mac, old in before.items():
            new = macs.get(mac)
            if new is None:
                if old is not None:
                    removed.append(old)
            elif new != old:
                upserted.append(new)
        for table in (self._macs, self._v4, self._v6):  # one at a time: each is a dict copy
            if table.needs_compacting():
                table.compact()
                break
        new = [msg for key, msg in self.problems.items() if before_problems.get(key) != msg]
        return MappingChange(upserted=tuple(upserted), removed=tuple(removed)), new

    def load(self, events: Iterable[WatchEvent]) -> list[str]:
        """Fill an empty state from a full read (all PUTs); → the problems found."""
        for ev in events:
            self.apply_one(ev.kind, ev.key, ev.value, ev.create_revision, None)
        return list(self.problems.values())

    def load_page(self, kvs: Iterable[Any]) -> None:
        """Add one page of a full read (etcd KeyValues, in key order) to a state no snapshot was taken of."""
        apply = self.apply_one
        for kv in kvs:
            apply(PUT, kv.key.decode("utf-8", "replace"), kv.value, kv.create_revision, None)

    def apply_one(self, kind: str, key: str, value: bytes | str | None, create_revision: int,
                  before: dict[str, MappingRecord | None] | None) -> None:
        """One event; `before` (when given) gets the old record of every MAC it touches."""
        base = self.base_key
        rest = key[len(base):] if key.startswith(base) else None
        if rest is not None and _CANONICAL.fullmatch(rest) and mac_problem(rest) is None:
            mac: str | None = rest
        else:
            try:
                mac = parse_key(key, self.prefix, self.vni)
            except KeyError_ as exc:
                self._decide(self._drop(key, None, before), before)
                if kind == PUT:
                    self.bad[key] = str(exc)
                else:
                    self.bad.pop(key, None)
                return
            if mac is None:
                return  # another VNI or prefix: not ours
        freed = self._drop(key, mac, before)
        if self.bad:
            self.bad.pop(key, None)
        if self.conflicts:
            self.conflicts.pop(key, None)
        if kind != PUT:
            self._decide(freed, before)
            return
        try:
            rec = parse_value(key, mac, value if value is not None else b"")
        except ValueError as exc:
            self.bad[key] = str(exc)
            self._decide(freed, before)
            return
        rev = int(create_revision)
        if self._free(rec) and not (freed and self.loser_claims and any(c in self.loser_claims for c in freed)):
            # the common case (a new key, or a changed value): nobody else wants its MAC or IPs
            if before is not None:
                before.setdefault(mac, None)
            self._accept(key, rec, rev)
            return
        entry = _Entry(key, rec, (rev, key))
        self._add_loser(entry)
        self._decide(freed + _claims(rec), before)

    # -- bookkeeping -----------------------------------------------------------------
    def _free(self, rec: MappingRecord) -> bool:
        if rec.mac in self._macs or (self.loser_claims and ("mac", rec.mac) in self.loser_claims):
            return False
        for kind, n, table in (("v4", rec.arp_int, self._v4), ("v6", rec.ndp_int, self._v6)):
            if n is not None and (n in table or (self.loser_claims and (kind, n) in self.loser_claims)):
                return False
        return True

    def _key_of(self, mac: str) -> str:
        return self.odd_keys.get(mac) or self.base_key + mac

    def _rev_of(self, mac: str) -> int:
        rev = self.revs.get(mac)
        if rev is not None:
            return rev
        n = int(mac.replace(":", ""), 16)
        i = bisect_left(self._rev_macs, n)
        if i < len(self._rev_macs) and self._rev_macs[i] == n:
            return self._rev_vals[i]
        raise AssertionError(f"no create revision kept for accepted MAC {mac}")  # pragma: no cover

    def _accept(self, key: str, rec: MappingRecord, rev: int) -> None:
        mac = rec.mac
        self._macs.set(mac, rec)
        if rec.arp_int is not None:
            self._v4.set(rec.arp_int, rec)
        if rec.ndp_int is not None:
            self._v6.set(rec.ndp_int, rec)
        if key != self.base_key + mac:
            self.odd_keys[mac] = key
            self.revs[mac] = rev
            return
        n = int(mac.replace(":", ""), 16)
        if not self._macs.shared and (not self._rev_macs or self._rev_macs[-1] < n):
            self._rev_macs.append(n)  # the initial read comes in key order: kept sorted for bisect
            self._rev_vals.append(rev)
        else:
            self.revs[mac] = rev

    def _unaccept(self, rec: MappingRecord, before: dict[str, MappingRecord | None] | None) -> None:
        mac = rec.mac
        if before is not None:
            before.setdefault(mac, rec)
        self._macs.pop(mac)
        if rec.arp_int is not None and self._v4.get(rec.arp_int) is rec:
            self._v4.pop(rec.arp_int)
        if rec.ndp_int is not None and self._v6.get(rec.ndp_int) is rec:
            self._v6.pop(rec.ndp_int)
        self.odd_keys.pop(mac, None)
        self.revs.pop(mac, None)

    def _add_loser(self, entry: _Entry) -> None:
        self.losers[entry.key] = entry
        for c in _claims(entry.rec):
            self.loser_claims.setdefault(c, set()).add(entry.key)

    def _remove_loser(self, key: str) -> _Entry | None:
        entry = self.losers.pop(key, None)
        if entry is not None:
            for c in _claims(entry.rec):
                keys = self.loser_claims.get(c)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self.loser_claims[c]
        return entry

    def _drop(self, key: str, mac: str | None, before: dict[str, MappingRecord | None] | None) -> list:
        """Forget `key`'s entry; → the claims it freed (those of an accepted record: others may want them)."""
        if self.losers and self._remove_loser(key) is not None:
            return []  # a key that lost holds nothing: nobody's decision depends on it
        if mac is None:
            return []
        rec = self._macs.get(mac)
        if rec is None or self._key_of(mac) != key:
            return []
        self._unaccept(rec, before)
        return _claims(rec)

    def _holders(self, claim: tuple[str, Any]) -> list[str]:
        kind, value = claim
        table = self._macs if kind == "mac" else self._v4 if kind == "v4" else self._v6
        rec = table.get(value)
        out = [self._key_of(rec.mac)] if rec is not None else []
        if self.loser_claims:
            out += self.loser_claims.get(claim, ())
        return out

    def _entry(self, key: str) -> _Entry:
        entry = self.losers.get(key)
        if entry is not None:
            return entry
        mac = parse_key(key, self.prefix, self.vni)
        assert mac is not None
        return _Entry(key, self._macs.get(mac), (self._rev_of(mac), key))

    def _decide(self, touched: list, before: dict[str, MappingRecord | None] | None) -> None:
        """Re-decide every key connected to the touched MACs/IPs through shared claims."""
        if not touched:
            return
        entries: dict[str, _Entry] = {}
        seen: set = set()
        todo = list(touched)
        while todo:
            c = todo.pop()
            if c in seen:
                continue
            seen.add(c)
            for k in self._holders(c):
                if k not in entries:
                    entries[k] = e = self._entry(k)
                    todo.extend(_claims(e.rec))
        for k, e in entries.items():  # everyone in the component starts undecided
            if self._remove_loser(k) is None:
                self._unaccept(e.rec, before)
            self.conflicts.pop(k, None)
        # greedy by (create_revision, key): the first to claim a MAC or IP keeps it
        for entry in sorted(entries.values(), key=lambda e: e.order):
            rec = entry.rec
            clash = None
            if rec.mac in self._macs:
                clash = f"key {entry.key}: duplicate MAC {rec.mac} (key {self._key_of(rec.mac)} has it)"
            else:
                for n, table, name, ip in ((rec.arp_int, self._v4, "arp", rec.arp),
                                           (rec.ndp_int, self._v6, "ndp", rec.ndp)):
                    if n is not None and n in table:
                        clash = f"key {entry.key}: field '{name}': {ip} is already claimed by {table.get(n).mac}"
                        break
            if clash is not None:
                self.conflicts[entry.key] = clash
                self._add_loser(entry)
                continue
            if before is not None:
                before.setdefault(rec.mac, None)
            self._accept(entry.key, rec, entry.order[0])


def build_mapping(prefix: str, vni: int, events: Iterable[WatchEvent]) -> tuple[MappingState, list[str]]:
    """A fresh state from a full read of the overlay's range."""
    state = MappingState(prefix, vni)
    problems = state.load(events)
    return state, problems
