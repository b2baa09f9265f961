from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "admin"))  # fake_service.py

from fake_service import ThreadedAdminServer, service, sock_dir  # noqa: E402, F401  (shared fixtures)
from varpd.cli.main import main  # noqa: E402


@pytest.fixture
def daemon(service, sock_dir):  # noqa: F811
    """A real AdminServer around the seeded FakeService (see .service, .socket_path)."""
    with ThreadedAdminServer(service, sock_dir / "varpd.sock") as server:
        yield server


@pytest.fixture
def varpd(daemon, capsys):
    """`varpd --socket <the fake daemon> ARGS...` → (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        rc = main(["--socket", str(daemon.socket_path), *args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run
