"""vxlan_layout: per-vni by default, one of two words, shared names are interface names; a shared
layout carries push-mode overlays only, refused before anything touches the kernel."""

import asyncio

import pytest
from pydantic import ValidationError

from varpd.backend.errors import PropertyError
from varpd.config.daemon import DaemonSettings, OverlayConfig
from varpd.daemon.layout import refuse_shared
from varpd.daemon.overlay import OverlayRuntime


def test_default_and_choices():
    assert DaemonSettings().vxlan_layout == "per-vni"
    assert DaemonSettings(vxlan_layout="shared").shared_bridge == "brvarpd"
    with pytest.raises(ValidationError, match="vxlan_layout"):
        DaemonSettings(vxlan_layout="one")
    with pytest.raises(ValidationError, match="shared_bridge"):
        DaemonSettings(shared_bridge="a-name-longer-than-15")
    with pytest.raises(ValidationError, match="is not a valid interface name"):
        DaemonSettings(shared_device="bad/name")


def test_shared_layout_refuses_an_on_demand_overlay_before_the_kernel(tmp_path):
    (tmp_path / "h.json").write_text("{}")
    cfg = OverlayConfig(name="vx9", vni=9, search="files", mode="on-demand",
                        properties={"vxlan/listen_ip": "192.0.2.1", "files/config": str(tmp_path / "h.json")})
    rt = OverlayRuntime(cfg, DaemonSettings(vxlan_layout="shared"))
    rt.validate()
    with pytest.raises(PropertyError, match="vxlan_layout=shared carries push-mode overlays only, not on-demand"):
        asyncio.run(refuse_shared(rt))
