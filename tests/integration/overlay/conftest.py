"""Fixtures for the overlay end-to-end tests: throw-away ``vt-`` network-namespace labs.

Every lab is named ``vt-<pytest pid><tag>-…`` (varpd.lab.session_prefix), so two pytest
sessions running at once never tear down each other's labs; leftovers of a crashed run
(owner pid dead) are removed once at session start.
"""
from __future__ import annotations

import os
import shutil

import pytest

from varpd.lab import cleanup

_BASE_BINARIES = ("ip", "bridge", "sysctl", "ping", "tcpdump")

_REASON = None
if os.geteuid() != 0:
    _REASON = "overlay integration tests need root (CAP_NET_ADMIN, network namespaces)"
elif not os.path.isdir("/proc/sys/net"):
    _REASON = "no /proc/sys/net: not a usable Linux network stack"
else:
    _missing = [b for b in _BASE_BINARIES if shutil.which(b) is None]
    if _missing:
        _REASON = f"overlay integration tests need {', '.join(_missing)} on PATH"


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.integration)
            if _REASON:
                item.add_marker(pytest.mark.skip(reason=_REASON))


@pytest.fixture(scope="session", autouse=True)
def _remove_stale_labs():
    if _REASON is None:
        cleanup("vt-", stale_only=True)
    yield
