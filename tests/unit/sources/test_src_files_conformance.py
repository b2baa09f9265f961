"""The shared backend conformance suite (varpd.backend.conformance), run against FilesBackend.

Two ways of delivering an update: an explicit reload() (no watcher), and the poller
noticing an atomic rename-over.
"""

from __future__ import annotations

import json
import os

from varpd.backend.conformance import CONTEXT, BackendConformance, hosts_json
from varpd.backend.properties import resolve
from varpd.model import Mapping
from varpd_plugins.files import FilesBackend


def _write(path, mapping: Mapping) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(hosts_json(mapping), indent=4))
    os.replace(tmp, path)


class TestFilesConformanceExplicitReload(BackendConformance):
    change_timeout = 3.0

    async def make_backend(self, mapping: Mapping) -> FilesBackend:
        path = self.tmp_path / "hosts.json"
        _write(path, mapping)
        props = resolve(FilesBackend.properties, {"files/config": str(path), "files/reload_interval": 0})
        return FilesBackend(CONTEXT, props)

    async def update_backend(self, backend: FilesBackend, mapping: Mapping) -> None:
        _write(backend.path, mapping)
        await backend.reload()


class TestFilesConformancePolling(BackendConformance):
    change_timeout = 3.0

    async def make_backend(self, mapping: Mapping) -> FilesBackend:
        path = self.tmp_path / "hosts.json"
        _write(path, mapping)
        backend = FilesBackend(CONTEXT, resolve(FilesBackend.properties, {"files/config": str(path)}))
        backend.interval = 0.02
        return backend

    async def update_backend(self, backend: FilesBackend, mapping: Mapping) -> None:
        _write(backend.path, mapping)  # the watcher picks it up; the suite waits for the change
