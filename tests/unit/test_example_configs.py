"""Every example config in configs/ loads and every overlay in it validates (plugin, properties)."""

from pathlib import Path

import pytest

from varpd.config.daemon import load_config
from varpd.daemon.overlay import OverlayRuntime

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.overlays, f"{path.name} defines no overlay"
    for overlay in cfg.overlays:
        OverlayRuntime(overlay, cfg.daemon).validate()
