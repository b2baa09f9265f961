"""Run by test_admin_flood.py in a subprocess: a real AdminServer (unix socket + TCP) around the
seeded FakeService, under a lowered RLIMIT_NOFILE and an RLIMIT_AS cap, logging to stderr.

argv: SOCKET PORT NOFILE HEADER_TIMEOUT [MAX_CONNECTIONS]"""
from __future__ import annotations

import asyncio
import logging
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fake_service.py

from fake_service import seeded  # noqa: E402
from varpd.admin.runner import AdminServer  # noqa: E402

MEMORY_CAP = 1 << 30


async def main(sock: str, port: int, header_timeout: float, max_connections: int | None) -> None:
    server = AdminServer(seeded(), sock, tcp=("127.0.0.1", port), header_timeout=header_timeout,
                         max_connections=max_connections)
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    sock, port, nofile, header_timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(sock, port, header_timeout, int(sys.argv[5]) if len(sys.argv) > 5 else None))
