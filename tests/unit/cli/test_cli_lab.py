"""`varpd lab up` on a machine without the tools it runs says which are missing and what to install."""
from __future__ import annotations

import os

import pytest

from varpd.cli.main import main
from varpd.lab.checks import missing_tools


@pytest.mark.parametrize("present, message", [
    ((), "needs ip, bridge, ping on PATH: apt-get install iproute2 iputils-ping "
         "(Debian packages iproute2, iputils-ping)"),
    (("ip", "bridge"), "needs ping on PATH: apt-get install iputils-ping (Debian package iputils-ping)"),
])
def test_lab_up_names_the_missing_tools_and_their_packages(tmp_path, monkeypatch, capsys, present, message):
    for name in present:
        tool = tmp_path / name
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert missing_tools() == message
    assert main(["lab", "--dir", str(tmp_path / "lab"), "up"]) == 1
    assert capsys.readouterr().err == f"varpd: lab: {message}\n"
    assert not os.path.exists(tmp_path / "lab"), "nothing is made before the check"
