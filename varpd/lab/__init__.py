"""Network-namespace lab for varpd (tests and `varpd lab up/down`)."""

from varpd.lab.topology import (
    HostSpec,
    Lab,
    LabError,
    cleanup,
    http_get,
    http_request,
    seed_hosts,
    session_prefix,
    write_hosts_json,
    write_varpd_config,
)

__all__ = [
    "HostSpec", "Lab", "LabError", "cleanup", "http_get", "http_request", "seed_hosts", "session_prefix",
    "write_hosts_json", "write_varpd_config",
]
