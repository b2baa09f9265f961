"""Overlays survive restarts: one checksummed JSON file per overlay, written atomically.

Unlike illumos varpd (saved only at activation), state is re-saved on every
change.  A corrupt file is reported and skipped, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from varpd.config.daemon import OverlayConfig

log = logging.getLogger(__name__)


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _write_atomic(path: Path, doc: dict) -> None:
    """Write, fsync, rename over, fsync the directory: a crash leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(doc, indent=2, sort_keys=True))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


class StateStore:
    """overlays/<name>.json: the overlay as created; devices/<name>.json: which devices varpd made;
    overrides/<name>.json: entries set by hand with modify-overlay -s.

    The second survives restarts of every overlay (config-file ones too), so that a
    delete after a restart still removes exactly what varpd created and nothing else.
    """

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "overlays"
        self.devices_dir = Path(state_dir) / "devices"
        self.overrides_dir = Path(state_dir) / "overrides"

    def save(self, cfg: OverlayConfig) -> None:
        payload = cfg.model_dump(mode="json")
        _write_atomic(self.dir / f"{cfg.name}.json", {"version": 1, "sha256": _digest(payload), "overlay": payload})

    def save_created(self, name: str, vxlan: bool, bridge: bool) -> None:
        _write_atomic(self.devices_dir / f"{name}.json", {"vxlan": vxlan, "bridge": bridge})

    def load_created(self, name: str) -> tuple[bool, bool]:
        """(varpd created the VXLAN device, varpd created the bridge), False when unknown."""
        try:
            doc = json.loads((self.devices_dir / f"{name}.json").read_text())
            return bool(doc.get("vxlan")), bool(doc.get("bridge"))
        except (OSError, ValueError, AttributeError):
            return False, False

    def known_devices(self) -> list[str]:
        """Names of overlays whose devices varpd has made (and not yet deleted)."""
        return sorted(p.stem for p in self.devices_dir.glob("*.json")) if self.devices_dir.is_dir() else []

    def save_overrides(self, name: str, overrides: dict[str, str]) -> None:
        """Hand-set entries (mac → "ip:port" or "drop"), so they survive restarts."""
        _write_atomic(self.overrides_dir / f"{name}.json", dict(sorted(overrides.items())))

    def load_overrides(self, name: str) -> dict[str, str]:
        try:
            doc = json.loads((self.overrides_dir / f"{name}.json").read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}

    def delete(self, name: str) -> None:
        (self.dir / f"{name}.json").unlink(missing_ok=True)
        (self.devices_dir / f"{name}.json").unlink(missing_ok=True)
        (self.overrides_dir / f"{name}.json").unlink(missing_ok=True)

    def load_all(self) -> list[OverlayConfig]:
        if not self.dir.is_dir():
            return []
        found = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                doc = json.loads(path.read_text())
                payload = doc["overlay"]
                if doc.get("sha256") != _digest(payload):
                    raise ValueError("checksum mismatch")
                found.append(OverlayConfig.model_validate(payload))
            except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
                log.error("state=%s event=state-unreadable error=%s action=skipped", path, str(exc).replace("\n", " "))
        return found
