"""varpd: an overlay network control plane for Linux VXLAN, modelled on illumos varpd."""

__version__ = "0.1.0"
