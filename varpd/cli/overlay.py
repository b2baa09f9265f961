"""The dladm-shaped overlay commands: create-, delete-, show-overlay, reconcile."""

from __future__ import annotations

import argparse
from urllib.parse import quote

from varpd.cli.client import CliError, call
from varpd.cli.output import pick_fields, render

PROP_FIELDS = ["LINK", "PROPERTY", "PERM", "VALUE", "DEFAULT", "POSSIBLE"]
STATUS_FIELDS = ["LINK", "STATUS", "MODE", "PLUGIN", "VNI", "DETAILS"]
TARGET_FIELDS = ["LINK", "KIND", "TARGET", "DESTINATION", "ORIGIN"]


def _props(values: list[str]) -> dict[str, str]:
    """-p a=b,c=d -p e=f → {a: b, c: d, e: f}; a value may not contain a comma (as in dladm)."""
    out: dict[str, str] = {}
    for group in values:
        for pair in group.split(","):
            name, sep, value = pair.partition("=")
            if not sep or not name.strip():
                raise CliError(f"-p {pair!r}: expected property=value")
            out[name.strip()] = value.strip()
    return out


def create(args: argparse.Namespace) -> str:
    body = {
        "name": args.name, "vni": args.vnetid, "encap": args.encap, "search": args.search,
        "mode": args.mode, "bridge": args.bridge, "properties": _props(args.prop), "persist": not args.temporary,
    }
    described = call(args.socket, "POST", "/v1/overlays", body)
    return f"created overlay {described['name']} (vni {described['vni']}, {described['plugin']}, {described['mode']})"


def delete(args: argparse.Namespace) -> str:
    call(args.socket, "DELETE", f"/v1/overlays/{quote(args.name, safe='')}")
    return ""


def reconcile(args: argparse.Namespace) -> str:
    report = call(args.socket, "POST", f"/v1/overlays/{quote(args.name, safe='')}/reconcile")
    return " ".join(f"{k}={v}" for k, v in report.items())


def show(args: argparse.Namespace) -> str:
    if args.parseable and not args.output:
        raise CliError("-p requires -o field,...")
    overlays = [call(args.socket, "GET", f"/v1/overlays/{quote(args.name, safe='')}")] if args.name else call(
        args.socket, "GET", "/v1/overlays")
    if args.status:
        fields = pick_fields(args.output, STATUS_FIELDS)
        rows = [{"LINK": o["name"], "STATUS": o["status"], "MODE": o["mode"], "PLUGIN": o["plugin"],
                 "VNI": str(o["vni"]), "DETAILS": o["details"] or "--"} for o in overlays]
    elif args.target:
        fields = pick_fields(args.output, TARGET_FIELDS)
        rows = []
        for o in overlays:
            for e in call(args.socket, "GET", f"/v1/overlays/{quote(o['name'], safe='')}/entries"):
                rows.append({"LINK": o["name"], "KIND": e["kind"], "TARGET": e["target"],
                             "DESTINATION": e["destination"], "ORIGIN": e["origin"]})
    else:
        fields = pick_fields(args.output, PROP_FIELDS)
        rows = [{"LINK": o["name"], "PROPERTY": p["property"], "PERM": p["perm"], "VALUE": p["value"],
                 "DEFAULT": p["default"], "POSSIBLE": p["possible"]} for o in overlays for p in o["properties"]]
    return render(rows, fields, args.parseable)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("create-overlay", help="create an overlay (a VXLAN device programmed by a backend)",
                       description="Create an overlay in the running daemon. Its VXLAN device is created (or an "
                                   "identical one adopted) and programmed from the backend; the overlay is saved "
                                   "and comes back after a restart unless -t is given.")
    p.add_argument("-t", "--temporary", action="store_true", help="do not save the overlay: it is gone after a restart")
    p.add_argument("-e", "--encap", default="vxlan", choices=["vxlan"], help="encapsulation (only vxlan)")
    p.add_argument("-s", "--search", required=True, help="the backend answering lookups: files, direct, ...")
    p.add_argument("-v", "--vnetid", required=True, type=int, help="the virtual network id (VXLAN VNI, 0-16777215)")
    p.add_argument("-p", "--prop", action="append", default=[], metavar="PROP=VALUE[,...]",
                   help="a property, e.g. vxlan/listen_ip=192.0.2.1 or files/config=/etc/varpd/hosts.json; repeatable")
    p.add_argument("-m", "--mode", default="auto", choices=["auto", "push", "on-demand"],
                   help="push every known entry ahead of traffic, or resolve on kernel misses (auto: by backend)")
    p.add_argument("-b", "--bridge", help="a Linux bridge to create (if missing) and attach the VXLAN device to")
    p.add_argument("name", help="the overlay's name, also the VXLAN netdev name (at most 15 characters)")
    p.set_defaults(func=create)

    p = sub.add_parser("delete-overlay", help="delete an overlay and the devices it created",
                       description="Delete an overlay: its VXLAN device (and its bridge if varpd created it) is "
                                   "removed and its saved state forgotten.")
    p.add_argument("name", help="the overlay to delete")
    p.set_defaults(func=delete)

    p = sub.add_parser("show-overlay", help="show overlays: properties, status (-f) or kernel entries (-t)",
                       description="Show overlays. Without -f or -t: one row per property (LINK PROPERTY PERM VALUE "
                                   "DEFAULT POSSIBLE). Exits 1 if NAME is not an overlay.")
    view = p.add_mutually_exclusive_group()
    view.add_argument("-f", "--status", action="store_true", help="status view: LINK STATUS MODE PLUGIN VNI DETAILS")
    view.add_argument("-t", "--target", action="store_true",
                      help="kernel entries: LINK KIND TARGET DESTINATION ORIGIN (FDB and neighbour entries)")
    p.add_argument("-p", "--parseable", action="store_true",
                   help="parseable output: no header, fields separated by ':' (escaped as '\\:'); needs -o")
    p.add_argument("-o", "--output", metavar="FIELD,...", help="the columns to print, case-insensitive")
    p.add_argument("name", nargs="?", help="one overlay (default: all)")
    p.set_defaults(func=show)

    p = sub.add_parser("reconcile", help="compare the kernel with the mapping now and repair differences",
                       description="Run the reconciler of one overlay now and print what it changed.")
    p.add_argument("name", help="the overlay to reconcile")
    p.set_defaults(func=reconcile)
