"""Backends are found through the `varpd.backends` entry-point group.

Only the selected backend's module is imported, so a files-only host never
imports etcd or HTTP client code; a broken third-party plugin is logged and
skipped, never fatal to the daemon.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

from varpd.backend.base import Backend
from varpd.backend.errors import PluginNotFound

GROUP = "varpd.backends"
log = logging.getLogger(__name__)


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available() -> list[str]:
    """Names of installed backends (not imported)."""
    return sorted(_entry_points())


def load(name: str) -> type[Backend]:
    """Import and return the backend class called `name`, or raise PluginNotFound with a hint."""
    ep = _entry_points().get(name)
    if ep is None:
        known = ", ".join(available()) or "none"
        raise PluginNotFound(f"unknown plugin {name!r} (installed: {known})")
    try:
        cls = ep.load()
    except ImportError as exc:
        raise PluginNotFound(
            f"plugin {name!r} ({ep.value}) cannot be imported: {exc}; install its extra, e.g. pip install 'varpd[{name}]'"
        ) from exc
    except Exception as exc:  # a broken third-party plugin must not take the daemon down
        log.exception("plugin %s failed to load", name)
        raise PluginNotFound(f"plugin {name!r} ({ep.value}) is broken: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise PluginNotFound(f"plugin {name!r} ({ep.value}) is not a varpd Backend")
    reason = cls.unavailable_reason()
    if reason:
        raise PluginNotFound(f"plugin {name!r} cannot run on this host: {reason}")
    return cls
