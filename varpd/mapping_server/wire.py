"""The JSON form of one record on the mapping API: hosts.json's record plus its `mac`.

    {"mac": "de:ad:be:ef:00:01", "ip": "192.0.2.2", "port": 4789,
     "arp": "10.55.55.3", "ndp": "fe80::4", "dhcp-proxy": "de:ad:be:ef:00:00"}

`ip` and `port` are required, the others optional, anything else refused: the
fields are validated by the very model hosts.json uses (`HostRecordModel`), so a
record means the same thing whichever backend carries it.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from varpd.config.hosts import HostRecordModel, describe_validation_error, record_body
from varpd.model import MappingRecord
from varpd.model.addresses import mac_problem
from varpd.packet.errors import PacketError
from varpd.packet.mac import normalize_mac


class WireError(ValueError):
    """A record body that is not a valid mapping record; the message names the field."""


def record_to_json(rec: MappingRecord) -> dict[str, Any]:
    return {"mac": rec.mac, **record_body(rec)}


def parse_mac(text: str) -> str:
    """The canonical form of a VNIC's MAC; WireError for a non-MAC or a non-unicast MAC."""
    try:
        mac = normalize_mac(str(text))
    except PacketError as exc:
        raise WireError(f"{text!r} is not a MAC address ({exc})") from None
    problem = mac_problem(mac)
    if problem is not None:
        raise WireError(problem)
    return mac


def record_from_json(body: Any, mac: str | None = None) -> MappingRecord:
    """Validate a record body; `mac` (when the URL names it) must agree with a `mac` field if present.

    Without `mac`, the body must carry one (events and /ips answers do).
    """
    if not isinstance(body, dict):
        raise WireError(f"expected a JSON object, got {type(body).__name__}")
    fields = dict(body)
    given = fields.pop("mac", None)
    mac = parse_mac(mac) if mac is not None else None
    if given is not None:
        given = parse_mac(given)
        if mac is not None and given != mac:
            raise WireError(f"field 'mac': {given} is not the requested {mac}")
    mac = mac or given
    if mac is None:
        raise WireError("missing required field 'mac'")
    try:
        return HostRecordModel.model_validate(fields).to_record(mac)
    except ValidationError as exc:
        raise WireError(f"{mac}: {describe_validation_error(exc.errors()[0])[1]}") from None
