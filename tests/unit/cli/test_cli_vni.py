"""One VNI argument type (varpd.cli.arguments.vni) for every command that takes a VNI: the same
range as the daemon's config and admin API (1-16777215), the same words, said in the help."""
from __future__ import annotations

import pytest

from varpd.cli.main import main
from varpd.config.daemon import OverlayConfig

# each command with just enough other arguments for argparse to reach --vni
COMMANDS = {
    "mapping-server": ["mapping-server", "--vni"],
    "svp-server": ["svp-server", "--vni"],
    "register": ["register", "--ip", "192.0.2.1", "--vnic", "02:00:00:00:00:01", "--vni"],
    "snoop": ["snoop", "--vni"],
    "create-overlay": ["create-overlay", "-s", "files", "vx7", "-v"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("value, message", [
    ("0", "0 is not a VNI: a VNI is 1-16777215 (the VXLAN VNI range)"),
    ("16777216", "16777216 is not a VNI: a VNI is 1-16777215 (the VXLAN VNI range)"),
    ("99999999999", "99999999999 is not a VNI: a VNI is 1-16777215 (the VXLAN VNI range)"),
    ("-5", "-5 is not a VNI: a VNI is 1-16777215 (the VXLAN VNI range)"),
    ("x", "'x' is not a number: a VNI is 1-16777215 (the VXLAN VNI range)"),
])
def test_every_command_refuses_the_same_vnis_with_the_same_words(capsys, command, value, message):
    with pytest.raises(SystemExit) as exc:
        main([*COMMANDS[command], value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith(message), err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_says_the_range_in_its_help(capsys, command):
    with pytest.raises(SystemExit):
        main([COMMANDS[command][0], "--help"])
    assert "1-16777215, the VXLAN VNI range" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("value", [0, 1 << 24, -1])
def test_the_daemon_config_refuses_them_with_the_same_words(value):
    with pytest.raises(ValueError, match=f"{value} is not a VNI: a VNI is 1-16777215 \\(the VXLAN VNI range\\)"):
        OverlayConfig(name="vx7", vni=value, search="files")


def test_the_edges_of_the_range_are_vnis():
    from varpd.cli.arguments import vni
    assert (vni("1"), vni("16777215"), vni("0xffffff")) == (1, 16777215, 16777215)
    assert OverlayConfig(name="vx7", vni=16777215, search="files").vni == 16777215
