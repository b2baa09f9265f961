"""A small client of the admin API over the daemon's unix socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp


class CliError(Exception):
    """One line for the user; the CLI prints it and exits 1."""


async def _call(socket: str, method: str, path: str, body: Any = None) -> Any:
    conn = aiohttp.UnixConnector(path=socket)
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            async with session.request(method, f"http://varpd{path}", json=body) as resp:
                text = await resp.text()
                is_json = resp.content_type == "application/json"
                if resp.status >= 400:
                    data = json.loads(text) if is_json and text else None
                    if isinstance(data, dict) and data.get("error"):
                        raise CliError(data["error"])
                    raise CliError(f"HTTP {resp.status} {resp.reason}: {' '.join(text.split())}".rstrip(": "))
                return json.loads(text) if text else None
    except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError) as exc:
        raise CliError(f"cannot reach the daemon at {socket}: {exc.__class__.__name__} "
                       f"(is `varpd daemon` running?)") from None
    except (json.JSONDecodeError, asyncio.TimeoutError) as exc:
        raise CliError(f"bad answer from the daemon at {socket}: {exc!r}") from None


def call(socket: str, method: str, path: str, body: Any = None) -> Any:
    return asyncio.run(_call(socket, method, path, body))
