"""Backend.emit: every backend's change stream reaches each listener, whatever another one does."""
from __future__ import annotations

import logging
from ipaddress import IPv4Address

from varpd.backend.base import MappingBackend
from varpd.backend.conformance import CONTEXT
from varpd.model import Destination, MappingChange, MappingRecord


class _Backend(MappingBackend):
    name = "test"


def test_a_failing_listener_is_logged_and_the_others_still_hear_the_change(caplog):
    b = _Backend(CONTEXT, {})
    heard = []

    def broken(change):
        raise RuntimeError("listener bug")

    b.add_listener(broken)
    b.add_listener(heard.append)
    change = MappingChange(upserted=(MappingRecord("02:00:00:00:00:01", Destination(IPv4Address("192.0.2.2"), 4789)),))
    with caplog.at_level(logging.ERROR):
        b.emit(change)  # does not raise into the backend's watcher
    assert heard == [change]
    assert "backend=test overlay=vx23 event=listener-failed" in caplog.text and "listener bug" in caplog.text


def test_flood_peers_default_to_none_and_a_change_reaches_every_listener(caplog):
    b = _Backend(CONTEXT, {})
    assert b.flood_peers() == frozenset()
    heard = []
    b.add_flood_listener(lambda: 1 / 0)
    b.add_flood_listener(lambda: heard.append("changed"))
    with caplog.at_level(logging.ERROR):
        b.flood_peers_changed()
    assert heard == ["changed"] and "event=listener-failed" in caplog.text
