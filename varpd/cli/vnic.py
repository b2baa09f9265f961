"""create-vnic, delete-vnic, show-vnic: a guest's port on an overlay (dladm create-vnic -l OVERLAY)."""

from __future__ import annotations

import argparse
from typing import Any

from varpd.cli.client import AdminClient, CliError, api_path, run_with_client
from varpd.cli.output import add_output_options, pick_fields, render

FIELDS = ["LINK", "OVER", "TYPE", "MACADDRESS", "NETNS", "MTU", "ADDRESSES", "STATUS", "WARNING"]


async def create(client: AdminClient, args: argparse.Namespace) -> str:
    body: dict[str, Any] = {"name": args.name, "overlay": args.link, "mac": args.mac, "type": args.type,
                            "addresses": args.address}
    if args.netns is not None:
        body["netns"] = args.netns
    if args.mtu is not None:
        body["mtu"] = args.mtu
    if args.guest_ifname is not None:
        body["guest_ifname"] = args.guest_ifname
    v = await client.request("POST", "/v1/vnics", body)
    where = f"{v['guest_ifname']} in namespace {v['netns']}" if v["type"] == "veth" else "a tap for a VM"
    line = f"created vnic {v['name']} on {v['overlay']} ({where}, mac {v['mac']}, mtu {v['mtu']})"
    return line + (f"\nwarning: {v['warning']}" if v.get("warning") else "")


async def delete(client: AdminClient, args: argparse.Namespace) -> str:
    await client.request("DELETE", api_path("v1", "vnics", args.name))
    return ""


def _row(v: dict[str, Any]) -> dict[str, Any]:
    return {"LINK": v["name"], "OVER": v["overlay"], "TYPE": v["type"], "MACADDRESS": v["mac"],
            "NETNS": v.get("netns"), "MTU": v.get("mtu"), "ADDRESSES": ",".join(v.get("addresses") or []),
            "STATUS": v["status"], "WARNING": v.get("warning") or v.get("details")}


async def show(client: AdminClient, args: argparse.Namespace) -> str:
    if args.parseable and not args.output:
        raise CliError("-p requires -o field,...")
    fields = pick_fields(args.output, FIELDS)
    if args.name:
        vnics = [await client.request("GET", api_path("v1", "vnics", args.name))]
    else:
        vnics = await client.request("GET", "/v1/vnics")
    return render([_row(v) for v in vnics], fields, args.parseable)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "create-vnic", help="create a VNIC: a guest's port on an overlay's bridge, with MAC spoofing protection",
        description="Create a VNIC on an overlay (which needs a bridge, -b of create-overlay). veth (default): "
                    "a pair whose guest end, with MAC and the overlay's MTU, goes into --netns with the --address "
                    "CIDRs (a missing namespace is made only by a daemon in the host's mount namespace; under "
                    "varpd.service make it first: systemctl enable --now varpd-netns@NS); tap: a persistent tap for a QEMU/libvirt guest. The "
                    "port is protected: the MAC is pinned on it (static, sticky), learning off, port locked. "
                    "The VNIC is saved and re-created when the daemon starts (after a reboot). A failed "
                    "create leaves nothing behind.")
    p.add_argument("-m", "--mac", required=True, metavar="MAC", help="the guest's unicast MAC")
    p.add_argument("-l", "--link", required=True, metavar="OVERLAY", help="the overlay to attach to")
    p.add_argument("-t", "--type", default="veth", choices=["veth", "tap"],
                   help="veth: a namespace guest (default); tap: a VM's tap")
    p.add_argument("--netns", metavar="NS", help="veth: the guest end's network namespace (/run/netns/NS)")
    p.add_argument("--address", action="append", default=[], metavar="CIDR",
                   help="veth: an address of the guest end, e.g. 10.55.55.2/24 or fe80::3/64; repeatable")
    p.add_argument("--mtu", type=int, metavar="N",
                   help="the MTU of both ends (default: the overlay's VXLAN device's, link/mtu)")
    p.add_argument("--guest-ifname", metavar="IFNAME", help="veth: the guest end's name (default eth0)")
    p.add_argument("name", help="the VNIC's name: the host end on the bridge (at most 15 characters)")
    p.set_defaults(func=run_with_client(create))

    p = sub.add_parser(
        "delete-vnic", help="delete a VNIC",
        description="Delete a VNIC: its pair or tap is removed and its saved state forgotten. A namespace the "
                    "guest end was in is left (its processes may still run). Exits 1 if the name is not a VNIC.")
    p.add_argument("name", help="the VNIC to delete")
    p.set_defaults(func=run_with_client(delete))

    p = sub.add_parser(
        "show-vnic", help="show VNICs: LINK OVER TYPE MACADDRESS NETNS MTU ADDRESSES STATUS WARNING",
        description="Show VNICs, one row each. STATUS is UP, DEGRADED (not on the bridge, protection missing, "
                    "down) or MISSING (not in the kernel: re-created at the next retry, every reconcile_interval "
                    "but at least every 30 s, once its namespace can be entered); WARNING says "
                    "when the MAC is not in the overlay's mapping (no host would reach the guest) or why "
                    "the VNIC is not UP.")
    add_output_options(p)
    p.add_argument("name", nargs="?", help="one VNIC (default: all of them)")
    p.set_defaults(func=run_with_client(show))
