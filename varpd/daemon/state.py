"""Overlays survive restarts: one checksummed JSON file per overlay, written atomically.

Unlike illumos varpd (saved only at activation), state is re-saved on every
change.  A corrupt file is reported and skipped, never fatal.  Files are 0600 in
0700 directories (they can hold an overlay's properties); a write that fails leaves
the old file and no temporary one, and raises StateError naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from varpd.config.daemon import OverlayConfig
from varpd.daemon.errors import StateError

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
SUBDIRS = ("overlays", "devices", "overrides", "vnics")  # vnics: varpd.daemon.vnics


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def write_atomic(path: Path, doc: dict) -> None:
    """Write, fsync, rename over, fsync the directory: a crash leaves the old or the new file."""
    tmp = path.with_suffix(".json.tmp")
    try:
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
        with open(fd, "w") as fh:
            os.fchmod(fd, FILE_MODE)  # an older tmp file may have been looser
            fh.write(json.dumps(doc, indent=2, sort_keys=True))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(f"cannot save state file {path}: {exc.strerror or exc}") from None


def _read_object(path: Path, what: str) -> dict:
    """The file's JSON object; {} when it is absent, or when it is unreadable or truncated
    (then one log line names the file and what is lost with it)."""
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return doc
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.error("state=%s event=state-unreadable error=%s action=dropped lost=%s", path,
                  str(exc).replace("\n", " "), what)
        return {}


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise StateError(f"cannot remove state file {path}: {exc.strerror or exc}") from None


class StateStore:
    """overlays/<name>.json: the overlay as created; devices/<name>.json: which devices varpd made;
    overrides/<name>.json: entries set by hand with modify-overlay -s.

    The second survives restarts of every overlay (config-file ones too), so that a
    delete after a restart still removes exactly what varpd created and nothing else.
    """

    def __init__(self, state_dir: Path) -> None:
        self.dir, self.devices_dir, self.overrides_dir = (Path(state_dir) / d for d in SUBDIRS[:3])

    def save(self, cfg: OverlayConfig) -> None:
        payload = cfg.model_dump(mode="json")
        write_atomic(self.dir / f"{cfg.name}.json", {"version": 1, "sha256": _digest(payload), "overlay": payload})

    def save_created(self, name: str, vxlan: bool, bridge: bool, netns: str | None = None) -> None:
        write_atomic(self.devices_dir / f"{name}.json", {"vxlan": vxlan, "bridge": bridge, "netns": netns})

    def load_created(self, name: str) -> tuple[bool, bool]:
        """(varpd created the VXLAN device, varpd created the bridge), False when unknown."""
        doc = _read_object(self.devices_dir / f"{name}.json", '"which devices varpd created: delete-overlay '
                           'keeps them"')
        return bool(doc.get("vxlan")), bool(doc.get("bridge"))

    def load_netns(self, name: str) -> str | None:
        """The namespace the devices of `name` were made in (None: the daemon's own)."""
        netns = _read_object(self.devices_dir / f"{name}.json", '"which devices varpd created"').get("netns")
        return netns if isinstance(netns, str) else None

    def save_kept_bridge(self, name: str, bridge: str, netns: str | None = None) -> None:
        """Overlay `name` is deleted but the bridge varpd made for it still has ports: still varpd's."""
        write_atomic(self.devices_dir / f"{name}.json",
                     {"vxlan": False, "bridge": True, "kept_bridge": bridge, "netns": netns})

    def load_kept_bridge(self, name: str) -> str | None:
        kept = _read_object(self.devices_dir / f"{name}.json", '"which devices varpd created"').get("kept_bridge")
        return kept if isinstance(kept, str) else None

    def forget_devices(self, name: str) -> None:
        _unlink(self.devices_dir / f"{name}.json")

    def known_devices(self) -> list[str]:
        """Names of overlays whose devices varpd has made (and not yet deleted)."""
        return sorted(p.stem for p in self.devices_dir.glob("*.json")) if self.devices_dir.is_dir() else []

    def save_overrides(self, name: str, overrides: dict[str, str]) -> None:
        """Hand-set entries (mac → "ip:port" or "drop"), so they survive restarts."""
        write_atomic(self.overrides_dir / f"{name}.json", dict(sorted(overrides.items())))

    def load_overrides(self, name: str) -> dict[str, str]:
        doc = _read_object(self.overrides_dir / f"{name}.json", '"the hand-set entries of the overlay"')
        return {str(k): str(v) for k, v in doc.items()}

    def delete(self, name: str) -> None:
        for d in (self.dir, self.devices_dir, self.overrides_dir):
            _unlink(d / f"{name}.json")

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
