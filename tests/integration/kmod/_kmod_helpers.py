"""Shell helpers for the kmod-shim integration tests."""
from __future__ import annotations

import asyncio
import json
import subprocess


def sh(*args: str, check: bool = True, ns: str | None = None, timeout: float = 30) -> str:
    cmd = list(args)
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


async def ash(*args: str, ns: str | None = None, check: bool = False, timeout: float = 30) -> tuple[int, str]:
    """Async subprocess (does not block the event loop that reads netlink)."""
    cmd = list(args)
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.decode()}")
    return proc.returncode, out.decode()


def link_json(name: str, ns: str) -> dict | None:
    out = subprocess.run(
        ["ip", "-n", ns, "-j", "-d", "link", "show", "dev", name], capture_output=True, text=True
    )
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)[0]
