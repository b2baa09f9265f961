"""The baseline responders of figure 2: a Python process that answers every miss with a fixed entry.

Run inside the namespace of the VXLAN device:
`_bare_responder.py IFINDEX DEST_IP [blocking|asyncio|pyroute2]`.
- `pyroute2`: the issue's baseline, "an AsyncIPRoute listener that programs a fixed
  answer": one `AsyncIPRoute` bound to RTMGRP_NEIGH, a second one sending
  `fdb('add')` / `neigh('replace')`, the ordinary pyroute2 way to write such a tool.
- `blocking` and `asyncio`: the floor. A raw NETLINK_ROUTE socket on RTMGRP_NEIGH, hand-
  packed requests; `blocking` waits in recv(), `asyncio` waits in an event loop like
  varpd, so the difference between the two is the event loop's own cost.
Every RTM_GETNEIGH (miss) on IFINDEX gets one request + one ACK read, the same netlink
operations varpd performs:
- L2 (NDA_LLADDR, no NDA_DST): permanent FDB entry MAC → DEST_IP:4789 (NTF_SELF);
- L3 (NDA_DST): permanent neighbour entry IP → 02:00:00:00:00:99.
No imports from varpd.
"""
import socket
import struct
import sys

NLH = struct.Struct("=IHHII")
NDMSG = struct.Struct("=BxxxiHBB")
NLA = struct.Struct("=HH")
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
NDA_DST, NDA_LLADDR, NDA_PORT = 1, 2, 6
AF_BRIDGE, NTF_SELF, NUD_PERMANENT = 7, 2, 0x80
FLAGS = 0x01 | 0x04 | 0x400 | 0x100  # REQUEST ACK CREATE REPLACE
FIXED_MAC = bytes.fromhex("020000000099")


def attr(t, payload):
    n = 4 + len(payload)
    return NLA.pack(n, t) + payload + b"\0" * ((-n) % 4)


def main():
    mode = sys.argv[3] if len(sys.argv) > 3 else "blocking"
    if mode == "pyroute2":
        import asyncio
        asyncio.run(pyroute2_main(int(sys.argv[1]), sys.argv[2]))
        return
    ifindex, dest = int(sys.argv[1]), socket.inet_aton(sys.argv[2])
    dst_attr, port_attr = attr(NDA_DST, dest), attr(NDA_PORT, struct.pack("!H", 4789))
    ev = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    ev.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)
    ev.bind((0, 1 << 2))
    req = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    req.bind((0, 0))
    buf, abuf = bytearray(1 << 16), bytearray(1 << 12)
    view = memoryview(buf)
    seq = 0
    print("ready", flush=True)

    def handle(n):
        nonlocal seq
        off = 0
        while off + 16 <= n:
            mlen, mtype = NLH.unpack_from(view, off)[:2]
            if mlen < 16:
                break
            if mtype == RTM_GETNEIGH:
                fam, idx = NDMSG.unpack_from(view, off + 16)[:2]
                if idx == ifindex:
                    a, end, attrs = off + 28, off + mlen, {}
                    while a + 4 <= end:
                        alen, atype = NLA.unpack_from(view, a)
                        if alen < 4:
                            break
                        attrs[atype & 0x3FFF] = bytes(view[a + 4:a + alen])
                        a += (alen + 3) & ~3
                    seq += 1
                    if NDA_DST in attrs:
                        ip = attrs[NDA_DST]
                        family = socket.AF_INET if len(ip) == 4 else socket.AF_INET6
                        body = NDMSG.pack(family, ifindex, NUD_PERMANENT, 0, 0) + attr(NDA_DST, ip) \
                            + attr(NDA_LLADDR, FIXED_MAC)
                    elif NDA_LLADDR in attrs:
                        body = NDMSG.pack(AF_BRIDGE, ifindex, NUD_PERMANENT, NTF_SELF, 0) \
                            + attr(NDA_LLADDR, attrs[NDA_LLADDR]) + dst_attr + port_attr
                    else:
                        body = None
                    if body is not None:
                        req.send(NLH.pack(16 + len(body), RTM_NEWNEIGH, FLAGS, seq, 0) + body)
                        req.recv_into(abuf)  # the ACK
            off += (mlen + 3) & ~3

    if mode == "blocking":
        while True:
            handle(ev.recv_into(buf))
    import asyncio

    async def loop_main():
        loop = asyncio.get_running_loop()
        ev.setblocking(False)
        while True:
            handle(await loop.sock_recv_into(ev, buf))

    asyncio.run(loop_main())


async def pyroute2_main(ifindex: int, dest: str) -> None:
    """The same answers through pyroute2's AsyncIPRoute, in the way its documentation shows."""
    from pyroute2 import AsyncIPRoute

    events, req = AsyncIPRoute(rcvbuf=8 << 20), AsyncIPRoute()
    await events.bind(groups=1 << 2)  # RTMGRP_NEIGH
    fixed_mac = ":".join(f"{b:02x}" for b in FIXED_MAC)
    print("ready", flush=True)
    while True:
        async for msg in events.get():
            if msg["header"]["type"] != RTM_GETNEIGH or msg["ifindex"] != ifindex:
                continue
            ip, mac = msg.get("NDA_DST"), msg.get("NDA_LLADDR")
            try:
                if ip is not None:
                    await req.neigh("replace", ifindex=ifindex, dst=ip, lladdr=fixed_mac, state=NUD_PERMANENT)
                elif mac is not None:
                    await req.fdb("append", ifindex=ifindex, lladdr=mac, dst=dest, port=4789)
            except Exception as exc:  # noqa: BLE001 - a baseline keeps answering
                print(f"error: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
