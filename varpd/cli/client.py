"""A small async client of the admin API over the daemon's unix socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from yarl import URL

T = TypeVar("T")
TIMEOUT = 60.0  # creating an overlay waits for its backend's first answer


class CliError(Exception):
    """One line for the user; the CLI prints `varpd: <command>: <message>` and exits 1."""


def api_path(*segments: str) -> str:
    """`/v1/overlays/<name>` with every segment percent-encoded, so '#', '?', '/' or '..' in a
    name reach the daemon as part of the name instead of changing the request."""
    quoted = []
    for seg in segments:
        q = quote(seg, safe="")
        quoted.append(q.replace(".", "%2E") if set(seg) <= {"."} else q)
    return "/" + "/".join(quoted)


class AdminClient:
    """One HTTP session to the daemon for the length of one command."""

    def __init__(self, socket_path: str, timeout: float = TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminClient:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=self.socket_path),
            timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON answer (None for 204); CliError with the daemon's message otherwise."""
        assert self._session is not None, "use `async with AdminClient(...)`"
        url = URL("http://varpd" + path, encoded=True)
        try:
            async with self._session.request(method, url, json=body) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise CliError(_error_message(resp.status, resp.reason, text))
                return _decode(text, self.socket_path)
        except aiohttp.ClientConnectorError as exc:
            raise CliError(self._unreachable(_os_reason(exc.os_error))) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise CliError(self._unreachable(_os_reason(exc))) from None
        except OSError as exc:  # e.g. a socket path longer than sun_path
            raise CliError(self._unreachable(_os_reason(exc))) from None
        except asyncio.TimeoutError:
            raise CliError(f"the daemon at {self.socket_path} did not answer within "
                           f"{self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise CliError(f"bad answer from the daemon at {self.socket_path}: {exc}") from None

    def _unreachable(self, reason: str) -> str:
        return f"cannot reach the daemon at {self.socket_path}: {reason} (is `varpd daemon` running?)"


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _error_message(status: int, reason: str | None, text: str) -> str:
    """The daemon's `{"error": ...}`, or for anything else in the way the HTTP status itself."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"]:
        return " ".join(data["error"].split())
    return f"HTTP {status} {reason or ''}".rstrip()


def _decode(text: str, socket_path: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise CliError(f"bad answer from the daemon at {socket_path}: not JSON") from None


def run_with_client(command: Callable[[AdminClient, Any], Awaitable[T]]) -> Callable[[Any], T]:
    """Turn `async def command(client, args)` into the synchronous `func(args)` argparse calls."""

    def run(args: Any) -> T:
        async def with_client() -> T:
            async with AdminClient(args.socket) as client:
                return await command(client, args)

        return asyncio.run(with_client())

    run.__doc__ = command.__doc__
    return run
