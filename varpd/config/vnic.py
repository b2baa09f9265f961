"""A VNIC as the user describes it (create-vnic, the admin API, saved state)."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Interface
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from varpd.config.hosts import normalize_mac
from varpd.model.addresses import check_unicast_mac
from varpd.config.daemon import NetnsName
from varpd.model.identifiers import ifname_problem


class VnicConfig(BaseModel):
    """One VNIC as created (CLI, admin API, saved state)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=15, description="the host end's netdev name (IFNAMSIZ)")
    overlay: str = Field(min_length=1, max_length=15)
    mac: str
    type: Literal["veth", "tap"] = "veth"
    netns: NetnsName | None = None
    guest_ifname: str = Field(default="eth0", min_length=1, max_length=15)
    addresses: tuple[IPv4Interface | IPv6Interface, ...] = ()
    mtu: int | None = Field(default=None, ge=576, le=9000, description="default: the VXLAN device's MTU")

    @field_validator("name", "overlay", "guest_ifname")
    @classmethod
    def _ifname(cls, value: str) -> str:
        if problem := ifname_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str) -> str:
        return check_unicast_mac(normalize_mac(value))

    @model_validator(mode="after")
    def _shape(self) -> "VnicConfig":
        if self.type == "veth" and self.netns is None:
            raise ValueError("a veth VNIC needs --netns (its guest end goes there); for a VM use --type tap")
        if self.type == "tap" and (self.netns is not None or self.addresses):
            raise ValueError("a tap VNIC takes no --netns or --address: the VM configures its own addresses")
        return self
