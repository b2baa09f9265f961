"""varpd_kmod: the Linux stand-in for the illumos overlay module (netlink, AF_PACKET)."""
