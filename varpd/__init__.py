"""varpd: an overlay network control plane for Linux VXLAN, modelled on illumos varpd."""

import os as _os

# gRPC (etcd's aetcd, the evpn engine's gobgpd client) with fork support installs fork handlers
# that run in every child varpd starts (gobgpd, the hosts.json parser, tools) between fork and
# exec; seen here: a child aborted (SIGABRT) with "Epoll1Poller ... epoll_wait error: Bad file
# descriptor". varpd never forks without exec, so it needs none. Read by grpc when it loads.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
