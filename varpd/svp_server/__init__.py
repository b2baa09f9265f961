"""The reference SVP server (`varpd svp-server`): a hosts.json served over Triton portolan's SVP.

`shootdown` derives the shootdown log from mapping changes (pure), `server`
is the asyncio TCP server.  The wire format lives in `varpd_plugins.svp.wire`.
"""

from varpd.svp_server.server import SvpServer
from varpd.svp_server.shootdown import ShootdownLog

__all__ = ["ShootdownLog", "SvpServer"]
