"""create-vnic, show-vnic, delete-vnic end to end against the admin API around the FakeService:
what the CLI sends, the refusals of the VnicConfig model at the edge (one line each), the table and
the parseable output (-p -o) with its warning column."""
from __future__ import annotations

import pytest

from varpd.config.vnic import VnicConfig


def test_create_show_delete(varpd, daemon):
    rc, out, err = varpd("create-vnic", "-m", "DE-AD-BE-EF-00-10", "-l", "vx23", "--netns", "guest",
                         "--address", "10.55.55.2/24", "--address", "fe80::2/64", "vnic0")
    assert (rc, err) == (0, "")
    assert out == "created vnic vnic0 on vx23 (eth0 in namespace guest, mac de:ad:be:ef:00:10, mtu 1450)\n"
    assert daemon.service.vnics._vnics["vnic0"] == VnicConfig(
        name="vnic0", overlay="vx23", mac="de:ad:be:ef:00:10", netns="guest",
        addresses=("10.55.55.2/24", "fe80::2/64"))
    rc, out, err = varpd("create-vnic", "--type", "tap", "-m", "de:ad:be:ef:00:99", "-l", "vx23", "tap0")
    assert rc == 0 and out.splitlines()[1] == "warning: MAC de:ad:be:ef:00:99 is not in overlay vx23's mapping"

    rc, out, _ = varpd("show-vnic")
    header, tap, veth = out.splitlines()
    assert header.split() == ["LINK", "OVER", "TYPE", "MACADDRESS", "NETNS", "MTU", "ADDRESSES", "STATUS", "WARNING"]
    assert veth.split() == ["vnic0", "vx23", "veth", "de:ad:be:ef:00:10", "guest", "1450",
                            "10.55.55.2/24,fe80::2/64", "UP", "--"]
    assert tap.split()[:8] == ["tap0", "vx23", "tap", "de:ad:be:ef:00:99", "--", "1450", "--", "UP"]
    rc, out, _ = varpd("show-vnic", "-p", "-o", "link,macaddress,warning", "tap0")
    assert out == "tap0:de\\:ad\\:be\\:ef\\:00\\:99:MAC de\\:ad\\:be\\:ef\\:00\\:99 is not in overlay vx23's mapping\n"

    assert varpd("delete-vnic", "tap0")[:2] == (0, "")
    rc, out, err = varpd("show-vnic", "tap0")
    assert (rc, err) == (1, "varpd: show-vnic: vnic 'tap0' not found\n")
    assert varpd("show-vnic", "-p", "-o", "link") == (0, "vnic0\n", "")


@pytest.mark.parametrize("args, message", [
    (["-m", "01:00:5e:00:00:01", "--netns", "g"], "mac: 01:00:5e:00:00:01 is a multicast MAC"),
    (["-m", "00:00:00:00:00:00", "--netns", "g"], "mac: 00:00:00:00:00:00 is the all-zero MAC"),
    (["-m", "nonsense", "--netns", "g"], "mac: 'nonsense' is not a MAC address"),
    (["-m", "de:ad:be:ef:00:10"], "needs --netns"),
    (["-m", "de:ad:be:ef:00:10", "--type", "tap", "--netns", "g"], "a tap VNIC takes no --netns or --address"),
    (["-m", "de:ad:be:ef:00:10", "--netns", "g", "--address", "10.0.0.300/24"], "addresses.0"),
    (["-m", "de:ad:be:ef:00:10", "--netns", "g/../x"], "netns: 'g/../x' is not a network namespace name"),
])
def test_create_vnic_refusals_are_one_line(varpd, daemon, args, message):
    rc, out, err = varpd("create-vnic", "-l", "vx23", *args, "vnic0")
    assert rc == 1 and out == "" and err.count("\n") == 1 and message in err, err
    assert daemon.service.vnics._vnics == {}


def test_create_vnic_names_the_limits(varpd, daemon):
    rc, _, err = varpd("create-vnic", "-l", "vx23", "-m", "de:ad:be:ef:00:10", "--netns", "g", "a" * 16)
    assert rc == 1 and "name: String should have at most 15 characters" in err
    rc, _, err = varpd("create-vnic", "-l", "nope", "-m", "de:ad:be:ef:00:10", "--netns", "g", "vnic0")
    assert (rc, err) == (1, "varpd: create-vnic: overlay 'nope' not found\n")
    assert varpd("create-vnic", "-l", "vx23", "-m", "de:ad:be:ef:00:10", "--netns", "g", "vnic0")[0] == 0
    rc, _, err = varpd("create-vnic", "-l", "vx23", "-m", "de:ad:be:ef:00:11", "--netns", "g", "vnic0")
    assert (rc, err) == (1, "varpd: create-vnic: vnic 'vnic0' already exists\n")


def test_create_vnic_mtu_is_sent_and_bounded(varpd, daemon):
    assert varpd("create-vnic", "-l", "vx23", "-m", "de:ad:be:ef:00:10", "--netns", "g", "--mtu", "1400", "v0")[0] == 0
    assert daemon.service.vnics._vnics["v0"].mtu == 1400
    rc, _, err = varpd("create-vnic", "-l", "vx23", "-m", "de:ad:be:ef:00:11", "--netns", "g", "--mtu", "100", "v1")
    assert rc == 1 and "mtu: Input should be greater than or equal to 576" in err


def test_show_vnic_parseable_needs_fields(varpd, daemon):
    assert varpd("show-vnic", "-p") == (1, "", "varpd: show-vnic: -p requires -o field,...\n")
