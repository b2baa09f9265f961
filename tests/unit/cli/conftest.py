from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "admin"))  # fake_service.py

from fake_service import ThreadedAdminServer, seeded  # noqa: E402
from varpd.cli.main import main  # noqa: E402


@pytest.fixture
def sock_dir():
    """A short directory: pytest's tmp_path can overflow sun_path (108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="varpd-cli-") as d:
        yield Path(d)


@pytest.fixture
def daemon(sock_dir):
    with ThreadedAdminServer(seeded(), sock_dir / "varpd.sock") as server:
        yield server


@pytest.fixture
def varpd(daemon, capsys):
    """`varpd --socket <the fake daemon> ARGS...` → (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        rc = main(["--socket", str(daemon.socket_path), *args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run
