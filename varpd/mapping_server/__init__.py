"""The reference mapping server of the HTTP backend (`varpd mapping-server`).

It serves one overlay's mapping (a hosts.json, re-read when it changes, or an
in-memory table written through PUT/DELETE) over the API documented in
docs/mapping-api.yaml, and streams every change as server-sent events.

Importing this package is cheap: the wire format lives in `wire` (used by the
HTTP backend too); the aiohttp application is in `app`, the table in `store`.
"""

from varpd.mapping_server.wire import WireError, record_from_json, record_to_json

__all__ = ["WireError", "record_from_json", "record_to_json"]
