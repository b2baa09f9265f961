"""Tell a service manager how the daemon is doing: systemd's NOTIFY_SOCKET datagram protocol.

`Type=notify` units wait for READY=1 before `systemctl start/restart` returns, so provisioning
and dependent units can talk to the admin socket the moment they run. The protocol is one
datagram of newline-separated VAR=VALUE lines to the AF_UNIX socket named by $NOTIFY_SOCKET
(a path, or an abstract name when it starts with '@'); see sd_notify(3). Without the variable
(run by hand, in tests, under another supervisor) every call is a no-op.
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """One datagram socket to the service manager, opened once; failures are logged, never raised:
    a manager that went away must not stop the daemon."""

    def __init__(self, address: str | None = None) -> None:
        if address is None:  # taken out of the environment: no child process may speak for us
            address = os.environ.pop("NOTIFY_SOCKET", None)
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        if not address:
            return
        if address.startswith("@"):
            self._address = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self._address = address
        else:  # vsock and other forms are not for a host daemon
            log.warning("event=notify-unsupported address=%s", address)
            return
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: object) -> None:
        """notify(READY=1, STATUS="…"): one datagram; a full or missing manager socket is logged once per call."""
        if self._sock is None:
            return
        payload = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            log.warning("event=notify-failed fields=%s error=%s", ",".join(fields), exc)

    def ready(self, status: str) -> None:
        self.notify(READY=1, STATUS=status, MAINPID=os.getpid())

    def stopping(self, status: str) -> None:
        self.notify(STOPPING=1, STATUS=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
