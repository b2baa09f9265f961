"""A conformance suite every backend can reuse, including third-party ones.

Subclass `BackendConformance` in a test module under a name pytest collects
(``Test...``) and override the hooks::

    from varpd.backend.conformance import BackendConformance, seed_mapping

    class TestMyBackend(BackendConformance):
        async def make_backend(self, mapping):
            ...  # a backend (NOT started) whose data source holds `mapping`
        async def update_backend(self, backend, mapping):
            ...  # make the started backend's source hold `mapping` (optional)

The tests are coroutines: run them with pytest-asyncio in ``asyncio_mode = auto``
(or add ``pytestmark = pytest.mark.asyncio`` to the subclass).  Every test
starts the backend itself and stops it at the end.  `self.tmp_path` is a fresh
directory per test, for backends whose source is a file.

Checked: start/stop idempotence; lookup of every known MAC returns its
destination; unknown MAC → None; arp/ndp by overlay IP; dhcp_proxy; record();
snapshot() equals the mapping when the backend is enumerable; after an update
the emitted changes add up to exactly the difference (added, changed, removed
with its old record) and nothing else; records of MACs that must never be
programmed (all-zero, broadcast, multicast) are refused, never served.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

import pytest

from varpd.backend.base import Backend, OverlayContext, PluginMode
from varpd.backend.errors import BackendError
from varpd.config.hosts import record_body
from varpd.model import Destination, Mapping, MappingChange, MappingRecord

__all__ = ["BackendConformance", "ChangeRecorder", "CONTEXT", "NON_UNICAST_MACS", "hosts_json", "seed_mapping",
           "updated_mapping"]

CONTEXT = OverlayContext(name="vx23", vni=23, listen_ip=IPv4Address("192.0.2.1"), listen_port=4789)


def seed_mapping() -> Mapping:
    """The three VNICs of the illumos files-plugin preview (addresses filled in)."""
    return Mapping.of([
        MappingRecord("de:ad:be:ef:00:00", Destination(IPv4Address("192.0.2.1"), 4789),
                      IPv4Address("10.55.55.2"), IPv6Address("fe80::3")),
        MappingRecord("de:ad:be:ef:00:01", Destination(IPv4Address("192.0.2.2"), 4789),
                      IPv4Address("10.55.55.3"), IPv6Address("fe80::4"), dhcp_proxy="de:ad:be:ef:00:00"),
        MappingRecord("de:ad:be:ef:00:02", Destination(IPv4Address("192.0.2.3"), 4789),
                      IPv4Address("10.55.55.4"), IPv6Address("fe80::5")),
    ])


#: MACs no backend may ever answer: the VXLAN default entry, broadcast, IPv4 and IPv6 multicast.
NON_UNICAST_MACS = ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "33:33:00:00:00:01")


def updated_mapping(base: Mapping) -> Mapping:
    """`base` with one record added, one removed, one changed (its port), the rest untouched."""
    recs = dict(base.by_mac)
    macs = sorted(recs)
    if len(macs) < 3:
        raise ValueError("updated_mapping needs at least three records")
    removed, changed = macs[-1], macs[0]
    del recs[removed]
    old = recs[changed]
    recs[changed] = MappingRecord(old.mac, Destination(old.dest.ip, 4790 if old.dest.port != 4790 else 4791),
                                  old.arp, old.ndp, old.dhcp_proxy)
    recs["de:ad:be:ef:00:99"] = MappingRecord("de:ad:be:ef:00:99", Destination(IPv4Address("192.0.2.99"), 4789),
                                              IPv4Address("10.55.55.99"), IPv6Address("fe80::99"))
    return Mapping.of(recs.values())


def hosts_json(mapping: Mapping) -> dict[str, Any]:
    """A mapping as the hosts.json object (what a files/etcd/http source would hold)."""
    return {mac: record_body(rec) for mac, rec in mapping.by_mac.items()}


class ChangeRecorder:
    """A change listener that keeps every MappingChange it is given and can wait for them."""

    def __init__(self) -> None:
        self.changes: list[MappingChange] = []
        self._event = asyncio.Event()

    def __call__(self, change: MappingChange) -> None:
        self.changes.append(change)
        self._event.set()

    async def wait(self, count: int = 1, timeout: float = 5.0) -> list[MappingChange]:
        """Wait until at least `count` changes were recorded; TimeoutError if they do not come."""
        async with asyncio.timeout(timeout):
            while len(self.changes) < count:
                self._event.clear()
                await self._event.wait()
        return list(self.changes)

    async def wait_until(self, predicate: Any, timeout: float = 5.0) -> bool:
        """Wait until predicate(self) holds (changes may arrive in pieces); its last value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self) and loop.time() < deadline:
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                break
        return bool(predicate(self))

    def net(self) -> tuple[dict[str, MappingRecord], dict[str, MappingRecord]]:
        """All recorded changes folded into ({mac: upserted record}, {mac: removed record})."""
        up: dict[str, MappingRecord] = {}
        gone: dict[str, MappingRecord] = {}
        for change in self.changes:
            for rec in change.removed:
                up.pop(rec.mac, None)
                gone[rec.mac] = rec
            for rec in change.upserted:
                gone.pop(rec.mac, None)
                up[rec.mac] = rec
        return up, gone


class BackendConformance:
    """Backend-neutral tests; subclass, override `make_backend` (and `update_backend`)."""

    #: How long to wait for a backend to report an update (remote backends are asynchronous).
    change_timeout: float = 5.0

    #: Override with the mapping the backend should be created with.
    def initial_mapping(self) -> Mapping:
        return seed_mapping()

    @pytest.fixture(autouse=True)
    def _conformance_tmp_path(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    # -- hooks -----------------------------------------------------------------------
    async def make_backend(self, mapping: Mapping) -> Backend:
        """A backend, not started, whose data source holds exactly `mapping`."""
        raise NotImplementedError("override make_backend() in your conformance subclass")

    async def update_backend(self, backend: Backend, mapping: Mapping) -> None:
        """Make the started backend's data source hold `mapping` (the test then waits for its change)."""
        pytest.skip(f"{type(self).__name__} does not implement update_backend()")

    # -- helpers ---------------------------------------------------------------------
    async def _started(self, mapping: Mapping | None = None) -> tuple[Backend, Mapping]:
        mapping = self.initial_mapping() if mapping is None else mapping
        backend = await self.make_backend(mapping)
        await backend.start()
        return backend, mapping

    # -- tests -----------------------------------------------------------------------
    async def test_class_attributes(self) -> None:
        backend = await self.make_backend(self.initial_mapping())
        assert isinstance(backend, Backend)
        assert isinstance(type(backend).name, str) and type(backend).name
        assert isinstance(backend.mode, PluginMode)
        names = [spec.name for spec in backend.properties]
        assert len(names) == len(set(names)), f"duplicate property names: {names}"
        assert all(n.startswith(f"{type(backend).name}/") for n in names), names

    async def test_start_and_stop_are_idempotent(self) -> None:
        backend, _ = await self._started()
        await backend.start()  # a second start is harmless
        await backend.stop()
        await backend.stop()  # and so is a second stop
        backend2 = await self.make_backend(self.initial_mapping())
        await backend2.stop()  # stop without start must not raise

    async def test_restart_serves_again(self) -> None:
        backend, mapping = await self._started()
        try:
            await backend.stop()
            await backend.start()
            if backend.mode is PluginMode.DYNAMIC:
                mac, rec = next(iter(mapping.by_mac.items()))
                assert await backend.lookup(mac) == rec.dest
        finally:
            await backend.stop()

    async def test_lookup_every_known_mac(self) -> None:
        backend, mapping = await self._started()
        try:
            if backend.mode is PluginMode.POINT:
                dest = await backend.default()
                assert isinstance(dest, Destination)
                for mac in mapping.by_mac:
                    assert await backend.lookup(mac) == dest
                return
            for mac, rec in mapping.by_mac.items():
                assert await backend.lookup(mac) == rec.dest, mac
        finally:
            await backend.stop()

    async def test_unknown_mac_is_none(self) -> None:
        backend, _ = await self._started()
        try:
            if backend.mode is PluginMode.POINT:
                pytest.skip("a POINT backend answers every MAC")
            assert await backend.lookup("02:00:00:00:ff:ff") is None
            assert await backend.dhcp_proxy("02:00:00:00:ff:ff") is None
        finally:
            await backend.stop()

    async def test_arp_and_ndp_by_ip(self) -> None:
        backend, mapping = await self._started()
        try:
            if backend.mode is PluginMode.POINT:
                pytest.skip("a POINT backend carries ARP/NDP through the tunnel")
            for rec in mapping.by_mac.values():
                if rec.arp is not None:
                    assert await backend.arp(rec.arp) == rec.mac, rec.arp
                if rec.ndp is not None:
                    assert await backend.ndp(rec.ndp) == rec.mac, rec.ndp
            assert await backend.arp(ip_address("198.51.100.200")) is None
            assert await backend.ndp(ip_address("2001:db8::dead")) is None
        finally:
            await backend.stop()

    async def test_dhcp_proxy(self) -> None:
        backend, mapping = await self._started()
        try:
            if backend.mode is PluginMode.POINT:
                pytest.skip("a POINT backend carries DHCP through the tunnel")
            for mac, rec in mapping.by_mac.items():
                assert await backend.dhcp_proxy(mac) == rec.dhcp_proxy, mac
        finally:
            await backend.stop()

    async def test_record(self) -> None:
        backend, mapping = await self._started()
        try:
            if backend.mode is PluginMode.POINT:
                pytest.skip("a POINT backend has no records")
            for mac, rec in mapping.by_mac.items():
                got = await backend.record(mac)
                assert got is None or got == rec, mac  # None: the backend does not keep records
        finally:
            await backend.stop()

    async def test_snapshot_equals_mapping_when_enumerable(self) -> None:
        backend, mapping = await self._started()
        try:
            snap = backend.snapshot()
            if not backend.enumerable:
                assert snap is None
                return
            assert snap is not None
            assert dict(snap.by_mac) == dict(mapping.by_mac)
            assert dict(snap.by_ip) == dict(mapping.by_ip)
        finally:
            await backend.stop()

    async def test_update_emits_only_the_difference(self) -> None:
        backend, mapping = await self._started()
        recorder = ChangeRecorder()
        backend.add_listener(recorder)
        try:
            newer = updated_mapping(mapping)
            await self.update_backend(backend, newer)
            expected = mapping.diff(newer)
            want_up = {r.mac: r for r in expected.upserted}
            want_gone = {r.mac: r for r in expected.removed}
            await recorder.wait(1, self.change_timeout)
            # remote backends may split an update into several changes: wait until they add up
            await recorder.wait_until(lambda r: r.net() == (want_up, want_gone), self.change_timeout)
            taken = list(recorder.changes)
            up, gone = recorder.net()
            assert all(not c.full_resync for c in taken), "an update must not need a full resync"
            assert up == want_up, f"upserted {sorted(up)} but the difference is {sorted(want_up)}"
            assert gone == want_gone, f"removed {sorted(gone)} but the difference is {sorted(want_gone)}"
            # every emitted record is part of the difference: unchanged records are never re-sent
            unchanged = {m for m in newer.by_mac if mapping.by_mac.get(m) == newer.by_mac[m]}
            sent = {r.mac for c in taken for r in (*c.upserted, *c.removed)}
            assert not (sent & unchanged), f"unchanged records were emitted: {sorted(sent & unchanged)}"
            if backend.mode is PluginMode.DYNAMIC:
                for mac, rec in newer.by_mac.items():
                    assert await backend.lookup(mac) == rec.dest, mac
                for mac in want_gone:
                    assert await backend.lookup(mac) is None, mac
            if backend.enumerable:
                snap = backend.snapshot()
                assert snap is not None and dict(snap.by_mac) == dict(newer.by_mac)
        finally:
            await backend.stop()

    async def test_non_unicast_macs_are_never_served(self) -> None:
        base = self.initial_mapping()
        bad = [MappingRecord(mac, Destination(IPv4Address("192.0.2.77"), 4789), IPv4Address(f"10.55.55.{70 + i}"))
               for i, mac in enumerate(NON_UNICAST_MACS)]
        backend = await self.make_backend(Mapping.of([*base.by_mac.values(), *bad]))
        if backend.mode is PluginMode.POINT:
            pytest.skip("a POINT backend has no per-MAC records")
        try:
            await backend.start()
        except BackendError:
            return  # the source refused as a whole (a file is all-or-nothing)
        try:
            for rec in bad:
                assert await backend.lookup(rec.mac) is None, rec.mac
                assert await backend.arp(rec.arp) is None, rec.arp
            snap = backend.snapshot()
            if snap is not None:
                assert not set(snap.by_mac) & set(NON_UNICAST_MACS)
        finally:
            await backend.stop()
