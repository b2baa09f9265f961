"""Fixtures for the overlay end-to-end tests: throw-away ``vt-`` network-namespace labs.

Every lab is named ``vt-<pytest pid><tag>-…`` (varpd.lab.session_prefix), so two pytest
sessions running at once never tear down each other's labs; leftovers of a crashed run
(owner pid dead) are removed once at session start.
"""
from __future__ import annotations

import pytest

from varpd.lab import cleanup


@pytest.fixture(scope="session", autouse=True)
def _remove_stale_labs():
    """Set up only when a test of this suite runs (never on a machine that skips them)."""
    cleanup("vt-", stale_only=True)
    yield
