"""svp: Triton portolan's SVP protocol (illumos libvarpd svp plugin), resolved on demand.

`wire` encodes and decodes the messages (no I/O), `client` is the asyncio TCP
connection, `backend` the varpd backend (`-s svp`).
"""
