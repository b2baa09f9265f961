"""`varpd daemon`: read the config, start the overlays and the admin socket, wait for a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from varpd.backend.errors import ConfigError
from varpd.config.daemon import DaemonConfig, load_config
from varpd.daemon.errors import VarpdError
from varpd.logformat import make_formatter

log = logging.getLogger("varpd")


def _setup_logging(level: str, fmt: str = "kv") -> None:
    """`level` for varpd's loggers; pyroute2 never below INFO: its DEBUG is one line per netlink
    message of every periodic device check, which would bury varpd's own debug output."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    value = getattr(logging, level.upper())
    logging.basicConfig(level=value, handlers=[handler])
    logging.getLogger("pyroute2").setLevel(max(value, logging.INFO))


async def serve(config: DaemonConfig) -> None:
    """Raises VarpdError (one line) when the state_dir or the socket is unusable or another daemon's."""
    from varpd.daemon.statedir import claim

    lock = claim(config.daemon.state_dir)  # before the socket: a second daemon never touches the first's
    try:
        await _serve_locked(config)
    finally:
        lock.release()


async def _serve_locked(config: DaemonConfig) -> None:
    from varpd.admin.runner import AdminServer
    from varpd.daemon.sdnotify import Notifier
    from varpd.daemon.service import Varpd

    notifier = Notifier()
    service = Varpd(config.daemon)
    admin = AdminServer(service, str(config.daemon.socket), tcp=config.daemon.admin_tcp_address,
                        allow=config.daemon.admin_allow)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await admin.start()
    try:
        await service.start(config.overlays)
        # READY only now: the socket answers and every saved overlay has been programmed (or
        # marked DEGRADED), so `systemctl restart varpd` returns when the CLI can be used
        notifier.ready(_status(service))
        await stop.wait()
        notifier.stopping("stopping: devices and entries stay in the kernel")
        log.info("event=shutdown reason=signal")
    finally:
        await service.stop()
        await admin.stop()
        notifier.close()


def _status(service) -> str:
    overlays = service.overlays()
    online = sum(1 for rt in overlays if rt.status == "ONLINE")
    return f"serving {len(overlays)} overlay{'' if len(overlays) == 1 else 's'} ({online} online)"


def run(config_path: str | None, socket_override: str | None = None, state_dir_override: str | None = None,
        log_format_override: str | None = None) -> int:
    try:
        config = load_config(config_path) if config_path else DaemonConfig()
    except ConfigError as exc:
        for line in exc.lines:  # one line per problem, as varpd.toml(5) says
            print(f"varpd: daemon: {line}", file=sys.stderr)
        return 1
    updates = {}
    if socket_override:
        updates["socket"] = Path(socket_override)
    if state_dir_override:
        updates["state_dir"] = Path(state_dir_override)
    if log_format_override:
        updates["log_format"] = log_format_override
    if updates:
        config = config.model_copy(update={"daemon": config.daemon.model_copy(update=updates)})
    _setup_logging(config.daemon.log_level, config.daemon.log_format)
    try:
        asyncio.run(serve(config))
    except VarpdError as exc:
        print(f"varpd: daemon: {exc}", file=sys.stderr)
        return 1
    return 0
