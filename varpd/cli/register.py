"""`varpd register`: write this host's VNICs into etcd for the etcd backend, with a lease.

Foreground: the records are written under one lease of `--ttl` seconds that is kept
alive while the command runs, so a host that dies disappears from every other host's
mapping after its TTL; SIGTERM/SIGINT revoke the lease (the records go at once).
If etcd goes away the command keeps retrying (logged once) and re-registers if the
lease expired meanwhile.  `--once` writes without a lease and exits (for scripts,
records stay until deleted); `--delete` removes the records and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from varpd.cli.arguments import VNI_HELP, vni
from varpd.cli.client import CliError


def _say(msg: str) -> None:
    print(f"varpd register: {msg}", flush=True)


def parse_vnic(text: str, underlay: str, port: int) -> Any:
    """'MAC[,arp=IP][,ndp=IP6][,dhcp-proxy=MAC]' → MappingRecord, validated like a hosts.json record."""
    from pydantic import ValidationError

    from varpd.config.hosts import HostRecordModel, describe_validation_error
    from varpd.packet.errors import PacketError
    from varpd.packet.mac import normalize_mac

    mac, *attrs = [p.strip() for p in text.split(",")]
    try:
        mac = normalize_mac(mac)
    except PacketError:
        raise CliError(f"--vnic {text}: {mac!r} is not a MAC address") from None
    body: dict[str, Any] = {"ip": underlay, "port": port}
    for attr in attrs:
        name, sep, value = attr.partition("=")
        if not sep or name not in ("arp", "ndp", "dhcp-proxy"):
            raise CliError(f"--vnic {text}: {attr!r} is not arp=, ndp= or dhcp-proxy=")
        body[name] = value
    try:
        return HostRecordModel.model_validate(body).to_record(mac)
    except ValidationError as exc:
        _, reason = describe_validation_error(exc.errors()[0])
        raise CliError(f"--vnic {text}: {reason}") from None


def _session(args: argparse.Namespace) -> Any:
    from varpd_plugins.etcd import EtcdSession

    password = args.password
    if args.password_file:
        try:
            with open(args.password_file) as f:
                password = f.read().rstrip("\n")
        except OSError as exc:
            raise CliError(f"--password-file {args.password_file}: {exc.strerror}") from None
    try:
        return EtcdSession(args.endpoints, ca=args.ca, cert=args.cert, key=args.key, username=args.username,
                           password=password, timeout=args.timeout)
    except ValueError as exc:
        raise CliError(str(exc)) from None


async def _run(args: argparse.Namespace) -> int:
    from varpd_plugins.etcd import _short, _unreachable_errors
    from varpd_plugins.etcd_keys import encode_value, key_for

    records = [parse_vnic(v, args.ip, args.port) for v in args.vnic]
    items = [(key_for(args.prefix, args.vni, r.mac).encode(), encode_value(r).encode()) for r in records]
    session = _session(args)
    unreachable = _unreachable_errors()
    try:
        if args.delete or args.once:
            try:
                client = await session.client()
                if args.delete:
                    ops = [client.transactions.delete(k) for k, _ in items]
                else:
                    ops = [client.transactions.put(k, v) for k, v in items]
                await client.transaction(compare=[], success=ops, failure=[])
            except unreachable as exc:
                raise CliError(f"etcd {session.describe()}: {_short(exc)}") from None
            for k, v in items:
                _say(f"{'deleted' if args.delete else 'wrote'} {k.decode()}" + ("" if args.delete else f" {v.decode()}"))
            return 0

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        lease_id: int | None = None
        down_since = False
        failures = 0
        interval = max(0.5, args.ttl / 3)
        while not stop.is_set():
            try:
                client = await session.client()
                if lease_id is None:
                    lease = await client.lease(args.ttl)
                    ops = [client.transactions.put(k, v, lease=lease.id) for k, v in items]
                    await client.transaction(compare=[], success=ops, failure=[])
                    lease_id = lease.id
                    _say(f"registered {len(items)} VNIC(s) under {args.prefix.rstrip('/')}/{args.vni}/ "
                         f"with lease {lease_id:x} (TTL {args.ttl}s): {', '.join(r.mac for r in records)}")
                else:
                    reply = await client.refresh_lease(lease_id)
                    if reply is None or reply.TTL <= 0:
                        _say(f"lease {lease_id:x} expired: registering again")
                        lease_id = None
                        continue
                if down_since:
                    _say("etcd reachable again")
                    down_since = False
                failures = 0
                wait = interval
            except unreachable as exc:
                if not down_since:
                    _say(f"etcd unreachable ({session.describe()}): {_short(exc)}; retrying")
                    down_since = True
                await session.reset()
                failures += 1
                wait = min(5.0, 0.25 * 2 ** (failures - 1))
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except asyncio.TimeoutError:
                pass
        if lease_id is not None:
            try:
                client = await session.client()
                await client.revoke_lease(lease_id)
                _say(f"revoked lease {lease_id:x}: records removed")
            except unreachable as exc:
                _say(f"could not revoke the lease ({_short(exc)}): records go after the TTL")
        return 0
    finally:
        await session.close()


def register(args: argparse.Namespace) -> int:
    try:
        import varpd_plugins.etcd as etcd
    except ImportError as exc:
        raise CliError(f"the etcd backend cannot be imported: {exc}") from None
    reason = etcd.EtcdBackend.unavailable_reason()
    if reason:
        raise CliError(reason)
    if args.ttl < 2 and not (args.once or args.delete):
        raise CliError("--ttl must be at least 2 seconds")
    return asyncio.run(_run(args))


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "register", help="write this host's VNICs into etcd (etcd backend), kept alive by a lease",
        description="Write this host's VNIC records under <prefix>/<vni>/<mac> in etcd, for overlays using the "
                    "etcd backend. Runs in the foreground keeping a lease of --ttl seconds alive, so the records "
                    "disappear TTL seconds after this host dies; SIGTERM/SIGINT remove them at once. --once writes "
                    "them without a lease and exits; --delete removes them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--endpoints", required=True, help="etcd cluster: host:port[,host:port...] (as etcd/endpoints)")
    p.add_argument("--prefix", default="/varpd", help="key prefix (as etcd/prefix)")
    p.add_argument("--vni", type=vni, required=True, metavar="VNI", help=f"the overlay's VNI ({VNI_HELP})")
    p.add_argument("--ip", required=True, help="this host's underlay address (its vxlan/listen_ip)")
    p.add_argument("--port", type=int, default=4789, help="this host's VXLAN UDP port")
    p.add_argument("--vnic", action="append", required=True, metavar="MAC[,arp=IP][,ndp=IP6][,dhcp-proxy=MAC]",
                   help="one VNIC of this host (repeat for more)")
    p.add_argument("--ttl", type=int, default=10, help="lease TTL in seconds")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="write without a lease and exit")
    mode.add_argument("--delete", action="store_true", help="delete these VNICs' records and exit")
    p.add_argument("--ca", help="CA bundle (PEM) for TLS")
    p.add_argument("--cert", help="client certificate (PEM) for TLS")
    p.add_argument("--key", help="client key (PEM) for TLS")
    p.add_argument("--username", help="etcd user")
    p.add_argument("--password", help="etcd password (prefer --password-file)")
    p.add_argument("--password-file", help="file holding the etcd password")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per etcd request")
    p.set_defaults(func=register)
