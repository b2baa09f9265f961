"""The entry-point registry: load() by name, PluginNotFound with the installed names, available()."""

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


def test_available_lists_both_sorted():
    names = registry.available()
    assert {"files", "direct"} <= set(names)
    assert names == sorted(names)


def test_unknown_plugin_lists_installed_names():
    with pytest.raises(PluginNotFound) as info:
        registry.load("nope")
    msg = str(info.value)
    assert msg.startswith("unknown plugin 'nope' (installed: ")
    for name in registry.available():
        assert name in msg
    assert f"(installed: {', '.join(registry.available())})" in msg
