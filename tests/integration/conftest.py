"""Shared by every integration suite: each test is marked ``integration`` and, on a machine
that cannot run its suite, skipped with one clear reason (CI here runs them all)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# suite folder → the binaries its tests call
NEEDS = {
    "kmod": ("ip", "bridge"),
    "overlay": ("ip", "bridge", "sysctl", "ping", "tcpdump"),
}


def skip_reason(suite: str) -> str | None:
    """Why the tests of `suite` cannot run here, or None."""
    if os.geteuid() != 0:
        return f"{suite} integration tests need root (CAP_NET_ADMIN, network namespaces)"
    if not os.path.isdir("/proc/sys/net"):
        return "no /proc/sys/net: not a usable Linux network stack"
    missing = [b for b in NEEDS.get(suite, ()) if shutil.which(b) is None]
    if missing:
        return f"{suite} integration tests need {', '.join(missing)} on PATH"
    return None


def pytest_collection_modifyitems(config, items):
    reasons: dict[str, str | None] = {}
    for item in items:
        try:
            suite = Path(str(item.fspath)).resolve().relative_to(HERE).parts[0]
        except ValueError:
            continue  # not an integration test
        item.add_marker(pytest.mark.integration)
        if suite not in reasons:
            reasons[suite] = skip_reason(suite)
        if reasons[suite]:
            item.add_marker(pytest.mark.skip(reason=reasons[suite]))
