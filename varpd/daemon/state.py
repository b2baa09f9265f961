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


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "overlays"

    def save(self, cfg: OverlayConfig) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        payload = cfg.model_dump(mode="json")
        blob = json.dumps({"version": 1, "sha256": _digest(payload), "overlay": payload}, indent=2, sort_keys=True)
        path = self.dir / f"{cfg.name}.json"
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dirfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    def delete(self, name: str) -> None:
        (self.dir / f"{name}.json").unlink(missing_ok=True)

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
