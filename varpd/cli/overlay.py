"""The dladm-shaped overlay commands: create-, delete-, modify-, show-, lookup-overlay, reconcile."""

from __future__ import annotations

import argparse
import ipaddress
from typing import Any
from urllib.parse import urlencode

from varpd.cli.arguments import VNI_HELP, vni
from varpd.cli.client import AdminClient, CliError, api_path, run_with_client
from varpd.cli.output import add_output_options, pick_fields, render

PROP_FIELDS = ["LINK", "PROPERTY", "PERM", "VALUE", "DEFAULT", "POSSIBLE"]
STATUS_FIELDS = ["LINK", "STATUS", "MODE", "PLUGIN", "VNI", "NETNS", "DETAILS"]
TARGET_FIELDS = ["LINK", "KIND", "TARGET", "DESTINATION", "ORIGIN", "AGE"]
CACHE_FIELDS = ["LINK", "ENTRIES", "POSITIVE", "NEGATIVE", "HITS", "NEGHITS", "MISSES", "EVICTIONS",
                "RATELIMITED", "TTL", "NEGTTL"]
LOOKUP_FIELDS = ["LINK", "TARGET", "ANSWER", "ORIGIN", "AGE", "TTL", "BACKEND", "KERNEL", "ROUTE"]
BACKEND_FIELDS = ["LINK", "FIELD", "VALUE"]


def parse_props(groups: list[str]) -> dict[str, str]:
    """-p a=b,c=d -p e=f → {a: b, c: d, e: f}. A comma starts the next property only when what follows
    it holds '='; otherwise it belongs to the value, so lists stay whole (dhcp/dns=10.77.0.53,10.77.0.54).
    A value may hold '='."""
    props: dict[str, str] = {}
    for group in groups:
        name = None
        for piece in group.split(","):
            key, sep, value = piece.partition("=")
            if not sep and name is not None and piece.strip():
                props[name] += "," + piece.strip()
                continue
            if not sep or not key.strip():
                raise CliError(f"-p {piece!r}: expected property=value")
            name = key.strip()
            props[name] = value.strip()
    return props


async def create(client: AdminClient, args: argparse.Namespace) -> str:
    body: dict[str, Any] = {"name": args.name, "vni": args.vnetid, "encap": args.encap,
                            "search": args.search, "mode": args.mode, "properties": parse_props(args.prop)}
    for key in ("bridge", "netns"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.temporary:
        body["persist"] = False
    described = await client.request("POST", "/v1/overlays", body)
    return f"created overlay {described['name']} (vni {described['vni']}, {described['plugin']}, {described['mode']})"


async def delete(client: AdminClient, args: argparse.Namespace) -> str:
    path = api_path("v1", "overlays", args.name) + ("?force_bridge=true" if args.force_bridge else "")
    answer = await client.request("DELETE", path)
    kept = (answer or {}).get("kept", [])
    return "\n".join(f"deleted overlay {args.name}; kept {k['device']}: {k['reason']}" for k in kept)


async def modify(client: AdminClient, args: argparse.Namespace) -> str:
    if args.delete:
        await client.request("DELETE", api_path("v1", "overlays", args.name, "cache", args.delete))
        return ""
    if args.flush:
        await client.request("DELETE", api_path("v1", "overlays", args.name, "cache"))
        return ""
    check_modify(args)
    mac, _, dest = args.set.partition("=")
    answer = await client.request("PUT", api_path("v1", "overlays", args.name, "cache", mac),
                                  {"destination": dest})
    return f"{answer['mac']} → {answer['destination']}"


async def set_props(client: AdminClient, args: argparse.Namespace) -> str:
    props = parse_props(args.prop)
    if not props:
        raise CliError("nothing to set: give -p prop=value")
    await client.request("PATCH", api_path("v1", "overlays", args.name), {"properties": props})
    return ""


async def reconcile(client: AdminClient, args: argparse.Namespace) -> str:
    report = await client.request("POST", api_path("v1", "overlays", args.name, "reconcile"))
    return " ".join(f"{k}={v}" for k, v in report.items())


def check_show(args: argparse.Namespace):
    """What show-overlay can refuse without the daemon (-p without -o, a field the view has not):
    (the view's row builder, the fields). The docs test runs every documented example through it."""
    if args.parseable and not args.output:
        raise CliError("-p requires -o field,...")
    if args.status:
        return _status_rows, pick_fields(args.output, STATUS_FIELDS)
    if args.target:
        return _target_rows, pick_fields(args.output, TARGET_FIELDS)
    if args.cache:
        return _cache_rows, pick_fields(args.output, CACHE_FIELDS)
    if args.backend:
        return _backend_rows, pick_fields(args.output, BACKEND_FIELDS)
    return _property_rows, pick_fields(args.output, PROP_FIELDS)


def check_lookup(args: argparse.Namespace) -> list[str]:
    if args.parseable and not args.output:
        raise CliError("-p requires -o field,...")
    return pick_fields(args.output, LOOKUP_FIELDS)


def check_modify(args: argparse.Namespace) -> None:
    if args.set is not None:
        mac, sep, dest = args.set.partition("=")
        if not sep or not mac or not dest:
            raise CliError(f"-s {args.set!r}: expected mac=ip:port or mac=drop")


def check_props(args: argparse.Namespace) -> dict[str, str]:
    return parse_props(args.prop)


async def show(client: AdminClient, args: argparse.Namespace) -> str:
    view, fields = check_show(args)
    if args.name:
        overlays = [await client.request("GET", api_path("v1", "overlays", args.name))]
    else:
        overlays = await client.request("GET", "/v1/overlays")
    rows = [row for o in overlays for row in await view(client, o)]
    return render(rows, fields, args.parseable)


async def _property_rows(client: AdminClient, o: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"LINK": o["name"], "PROPERTY": p["property"], "PERM": p["perm"], "VALUE": p["value"],
             "DEFAULT": p["default"], "POSSIBLE": p["possible"]} for p in o["properties"]]


async def _status_rows(client: AdminClient, o: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"LINK": o["name"], "STATUS": o["status"], "MODE": o["mode"], "PLUGIN": o["plugin"],
             "VNI": o["vni"], "NETNS": o.get("netns"), "DETAILS": o["details"]}]


async def _target_rows(client: AdminClient, o: dict[str, Any]) -> list[dict[str, Any]]:
    entries = await client.request("GET", api_path("v1", "overlays", o["name"], "entries"))
    return [{"LINK": o["name"], "KIND": e["kind"], "TARGET": e["target"], "DESTINATION": e["destination"],
             "ORIGIN": e["origin"], "AGE": e.get("age", "--")} for e in entries]


async def _cache_rows(client: AdminClient, o: dict[str, Any]) -> list[dict[str, Any]]:
    c = await client.request("GET", api_path("v1", "overlays", o["name"], "cache"))
    return [{"LINK": o["name"], "ENTRIES": c["entries"], "POSITIVE": c["positive"], "NEGATIVE": c["negative"],
             "HITS": c["hits"], "NEGHITS": c["negative_hits"], "MISSES": c["misses"], "EVICTIONS": c["evictions"],
             "RATELIMITED": c["rate_limited"], "TTL": f"{c['ttl']:g}", "NEGTTL": f"{c['negative_ttl']:g}"}]


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={_flat(v)}" for k, v in value.items()) or "--"
    if isinstance(value, list):
        return ",".join(_flat(v) for v in value) or "--"
    return "--" if value is None else str(value)


async def _backend_rows(client: AdminClient, o: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per item of the backend's state (evpn: sessions, rd, rt, flood_list, counters)."""
    return [{"LINK": o["name"], "FIELD": k, "VALUE": _flat(v)} for k, v in (o.get("backend") or {}).items()]


def _route(route: dict[str, Any] | None) -> str | None:
    """lookup-overlay's ROUTE: the route an answer came from (evpn: RD, next hop, sequence number)."""
    if not route:
        return None
    best, adv = route.get("best"), route.get("advertised")
    if best:
        flags = "".join(f" {flag}" for flag in ("sticky", "stale", "held") if best.get(flag))
        return f"rd {best['rd']} nh {best['next_hop']} seq {best['seq']}{flags}"
    if adv:
        return f"advertised rd {adv['rd']} nh {adv['next_hop']} seq {adv['seq']}"
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


async def lookup(client: AdminClient, args: argparse.Namespace) -> str:
    """The answer a kernel miss for MAC or IP would get now, and where it comes from."""
    fields = check_lookup(args)
    param = "ip" if _is_ip(args.target) else "mac"  # the daemon says what is wrong with a bad MAC
    path = api_path("v1", "overlays", args.name, "lookup") + "?" + urlencode(
        {param: args.target, **({"fresh": "1"} if args.fresh else {})})
    a = await client.request("GET", path)
    cache, backend = a.get("cache") or {}, a.get("backend")
    kernel = ", ".join(f"{e['destination']} ({e['origin']})" for e in a.get("kernel", []))
    row = {"LINK": a["overlay"], "TARGET": a["query"], "ANSWER": a["answer"], "ORIGIN": a["origin"],
           "AGE": f"{cache['age']:.0f}" if a["origin"] == "cache" else None,
           "TTL": f"{cache['ttl_remaining']:.0f}" if a["origin"] == "cache" else None,
           "BACKEND": f"{backend['plugin']} {backend['elapsed_ms']:.1f}ms" if backend else None,
           "KERNEL": kernel or None, "ROUTE": _route(a.get("route"))}
    if not args.output and row["ROUTE"] is None:  # only backends that know routes (evpn) add the column
        fields = [f for f in fields if f != "ROUTE"]
    return render([row], fields, args.parseable)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "create-overlay", help="create an overlay (a VXLAN device programmed by a backend)",
        description="Create an overlay in the running daemon. Its VXLAN device is created (or an identical "
                    "one adopted) and programmed from the backend named by -s; the overlay is saved and comes "
                    "back after a restart unless -t is given.")
    p.add_argument("-t", "--temporary", action="store_true",
                   help="do not save the overlay: it is gone after the daemon restarts")
    p.add_argument("-e", "--encap", default="vxlan", choices=["vxlan"],
                   help="the encapsulation; only vxlan (the default)")
    p.add_argument("-s", "--search", required=True, metavar="PLUGIN",
                   help="the backend answering lookups: files, direct, etcd, http, svp, or a third-party plugin")
    p.add_argument("-v", "--vnetid", required=True, type=vni, metavar="VNETID",
                   help=f"the virtual network id (VXLAN VNI, {VNI_HELP})")
    p.add_argument("-p", "--prop", action="append", default=[], metavar="PROP=VALUE[,...]",
                   help="set properties, e.g. vxlan/listen_ip=192.0.2.1,files/config=/etc/varpd/hosts.json; "
                        "repeatable; a list value keeps its commas (dhcp/dns=10.77.0.53,10.77.0.54): a comma "
                        "starts the next property only if '=' follows it")
    p.add_argument("-m", "--mode", default="auto", choices=["auto", "push", "on-demand"],
                   help="push: program every known entry ahead of traffic; on-demand: resolve kernel misses "
                        "as they come; auto (default): what the backend prefers")
    p.add_argument("-b", "--bridge", metavar="BRIDGE",
                   help="a Linux bridge to create (if missing) and attach the VXLAN device to")
    p.add_argument("--netns", metavar="NS",
                   help="the network namespace (ip netns) holding the VXLAN device and the bridge; it must exist "
                        "and hold vxlan/listen_ip (default: the daemon's own namespace)")
    p.add_argument("name", help="the overlay's name, also its VXLAN netdev name (at most 15 characters)")
    p.set_defaults(func=run_with_client(create), check=check_props)

    p = sub.add_parser(
        "delete-overlay", help="delete an overlay and the devices it created",
        description="Delete an overlay: its VXLAN device (and its bridge if varpd created it) is removed "
                    "and its saved state forgotten. A bridge varpd created that still has other ports is kept "
                    "and named in the output (with the ports); varpd removes it once its last port is gone, "
                    "even after a restart. Exits 1 if the name is not an overlay.")
    p.add_argument("--force-bridge", action="store_true",
                   help="also remove the bridge varpd created when other ports are still attached "
                        "(the kernel detaches them)")
    p.add_argument("name", help="the overlay to delete")
    p.set_defaults(func=run_with_client(delete))

    p = sub.add_parser(
        "modify-overlay", help="administer an overlay's entries: delete one (-d), flush (-f) or set one (-s)",
        description="Change an overlay's entries by hand, as dladm modify-overlay. A set entry or drop wins "
                    "over the backend, is saved and survives restarts, until -d or -f removes it.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("-d", "--delete", metavar="MAC",
                      help="forget MAC's entry (hand-set or resolved); it is resolved again from the backend")
    what.add_argument("-f", "--flush", action="store_true",
                      help="forget every hand-set and resolved entry of the overlay")
    what.add_argument("-s", "--set", metavar="MAC=IP:PORT|MAC=drop",
                      help="send MAC's frames to IP:PORT (or [IPv6]:PORT; the port defaults to the overlay's), "
                           "or drop them")
    p.add_argument("name", help="the overlay")
    p.set_defaults(func=run_with_client(modify), check=check_modify)

    p = sub.add_parser(
        "set-overlayprop", help="change writable properties of a live overlay",
        description="Change properties of a running overlay (PERM rw in show-overlay). Traffic is not "
                    "disturbed: the overlay's runtime restarts and adopts its device and entries. The change "
                    "is saved; for overlays defined in the config file, edit the file too, as it wins at start.")
    p.add_argument("-p", "--prop", action="append", default=[], required=True, metavar="PROP=VALUE[,...]",
                   help="properties to set, e.g. files/config=/etc/varpd/other.json; repeatable; commas as in "
                        "create-overlay -p")
    p.add_argument("name", help="the overlay")
    p.set_defaults(func=run_with_client(set_props), check=check_props)

    p = sub.add_parser(
        "show-overlay",
        help="show overlays: properties, status (-f), kernel entries (-t), lookup cache (-c) or backend state (-b)",
        description="Show overlays, one table. Without -f, -t, -c or -b: one row per property (LINK PROPERTY PERM "
                    "VALUE DEFAULT POSSIBLE); PERM is r- (fixed at create), rw (set-overlayprop changes it on "
                    "the live overlay) or rw* (required at create-overlay, and changeable as rw); POSSIBLE is "
                    "the values or range lo-hi accepted; booleans are true or false; '--' marks no value. "
                    "Exits 1 if the name is not an overlay.")
    view = p.add_mutually_exclusive_group()
    view.add_argument("-f", "--status", action="store_true",
                      help="status view: LINK STATUS MODE PLUGIN VNI NETNS DETAILS (STATUS is ONLINE or DEGRADED, "
                           "DETAILS says why; NETNS is the overlay's namespace, -- for the daemon's own)")
    view.add_argument("-t", "--target", action="store_true",
                      help="the kernel's entries: LINK KIND TARGET DESTINATION ORIGIN AGE (KIND is fdb for a MAC "
                           "→ underlay ip:port, neigh for an overlay IP → MAC; ORIGIN push (or the backend's name, "
                           "e.g. evpn), on-demand, manual or other; AGE seconds since varpd programmed it)")
    view.add_argument("-b", "--backend", action="store_true",
                      help="the backend's own state: LINK FIELD VALUE (evpn: engine, sessions and their state, "
                           "rd, rt, flood_list from IMET routes, routes and stale_routes, vtep_hold and held_vteps (VTEPs "
                           "that withdrew everything, kept: their routes, seconds left), counters)")
    view.add_argument("-c", "--cache", action="store_true",
                      help="the lookup cache: LINK ENTRIES POSITIVE NEGATIVE HITS NEGHITS MISSES EVICTIONS "
                           "RATELIMITED TTL NEGTTL (NEGHITS: answers from negative entries; RATELIMITED: misses "
                           "not looked up because the same target was looked up less than miss_rate_limit ago)")
    add_output_options(p)
    p.add_argument("name", nargs="?", help="one overlay (default: all of them)")
    p.set_defaults(func=run_with_client(show), check=check_show)

    p = sub.add_parser(
        "lookup-overlay", help="show the answer a kernel miss for a MAC or IP would get, and where it comes from",
        description="Look up a MAC (its destination ip:port) or an overlay IP (its MAC; IPv4 as ARP, IPv6 as "
                    "NDP) the way the daemon answers a kernel miss: a hand-set entry (ORIGIN override), else the "
                    "lookup cache (cache; AGE and TTL in seconds), else the backend (backend; BACKEND names the "
                    "plugin and how long it took; in on-demand mode the answer is cached as a miss would cache "
                    "it). KERNEL is "
                    "what the kernel holds for it now. ANSWER 'unknown' is a negative answer, 'drop' a hand-set "
                    "drop. Exits 1 if the name is not an overlay.")
    p.add_argument("-F", "--fresh", action="store_true",
                   help="ask the backend even if the cache has an answer; the cache is neither read nor written "
                        "and no rate limit applies")
    add_output_options(p, ": link, target, answer, origin, age, ttl, backend, kernel, route (evpn: the RD, "
                          "next hop and sequence number of the route the answer came from, and sticky, stale, held "
                          "when they apply; shown by default only when there is one)")
    p.add_argument("name", help="the overlay")
    p.add_argument("target", metavar="MAC|IP", help="a MAC (aa:bb:cc:dd:ee:ff) or an overlay IPv4/IPv6 address")
    p.set_defaults(func=run_with_client(lookup), check=check_lookup)

    p = sub.add_parser(
        "reconcile", help="compare the kernel with the mapping now and repair the differences",
        description="Run the reconciler of one overlay now and print what it changed, as key=value pairs.")
    p.add_argument("name", help="the overlay to reconcile")
    p.set_defaults(func=run_with_client(reconcile))
