"""`varpd svp-server --etcd`: the reference SVP server serving an etcd mapping (real etcd on loopback).

A record put in etcd is answered over SVP, and a change appends shootdown records that the
svp backend turns into a mapping change, end to end with no hosts.json involved.
"""
from __future__ import annotations

import json
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from etcd_fixture import etcd_server  # noqa: F401  (fixture)

pytest.importorskip("aetcd")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "svp"))
from test_svp_support import VNI, make_backend, wait_until  # noqa: E402

from varpd.model import Destination  # noqa: E402
from varpd.svp_server import SvpServer  # noqa: E402
from varpd.svp_server.server import make_source  # noqa: E402

MAC = "02:00:00:00:5e:01"


async def test_svp_server_follows_etcd(etcd_server):  # noqa: F811
    prefix = f"/svp{time.monotonic_ns()}"
    etcd_server.put(f"{prefix}/{VNI}/{MAC}", json.dumps({"ip": "192.0.2.2", "port": 4789, "arp": "10.9.0.2"}))
    source = make_source(VNI, "etcd", {"etcd/endpoints": etcd_server.endpoint, "etcd/prefix": prefix})
    server = SvpServer(VNI, source=source)
    await server.start("127.0.0.1", 0)
    backend = make_backend(server.address[1])
    await backend.start()
    try:
        assert await backend.lookup(MAC) == Destination(IPv4Address("192.0.2.2"), 4789)
        assert await backend.arp(IPv4Address("10.9.0.2")) == MAC
        # the backend introduced itself with a LOG_REQ on connecting: its log exists on the server
        await wait_until(lambda: IPv4Address("192.0.2.1") in server.shootdown.hosts, what="the first LOG_REQ")
        etcd_server.put(f"{prefix}/{VNI}/{MAC}", json.dumps({"ip": "192.0.2.3", "port": 4789, "arp": "10.9.0.2"}))
        await wait_until(lambda: backend.changes, timeout=10, what="the shootdown of the moved MAC")
        assert [r.mac for r in backend.changes[0].removed] == [MAC]
        assert await backend.lookup(MAC) == Destination(IPv4Address("192.0.2.3"), 4789)
        etcd_server.delete(f"{prefix}/{VNI}/{MAC}")
        await wait_until(lambda: server.mapping.by_mac.get(MAC) is None, timeout=10, what="the delete")
        assert await backend.lookup(MAC) is None
    finally:
        await backend.stop()
        await server.stop()
