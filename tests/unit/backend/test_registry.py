"""Backends are found by name through the varpd.backends entry points."""

from __future__ import annotations

import pytest

from varpd.backend import registry
from varpd.backend.base import Backend
from varpd.backend.errors import PluginNotFound
from varpd_plugins.direct import DirectBackend
from varpd_plugins.files import FilesBackend


def test_load_files_and_direct():
    assert registry.load("files") is FilesBackend
    assert registry.load("direct") is DirectBackend
    assert issubclass(registry.load("files"), Backend)


def test_available_lists_the_shipped_backends():
    names = registry.available()
    assert {"files", "direct"} <= set(names) and names == sorted(names)


def test_unknown_name_lists_installed_ones():
    with pytest.raises(PluginNotFound) as info:
        registry.load("nope")
    msg = str(info.value)
    assert msg.startswith("unknown plugin 'nope' (installed: ")
    assert "files" in msg and "direct" in msg
    assert f"(installed: {', '.join(registry.available())})" in msg  # every installed name, sorted
    assert "\n" not in msg
