"""The daemon's configuration file (TOML or YAML) → frozen pydantic models.

This module and varpd.cli.main are the only places that read files or the
environment for configuration; everything below receives these objects.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, IPvAnyNetwork, ValidationError, field_validator,
                      model_validator)

from varpd.backend.errors import ConfigError
from varpd.model.identifiers import VNI_RANGE, ifname_problem, vni_problem

PropValue = str | int | bool | float


class OverlayConfig(BaseModel):
    """One overlay as the user describes it (config file, CLI or admin API)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=15, description="the VXLAN netdev name (IFNAMSIZ)")
    vni: int = Field(description=f"the VXLAN VNI, {VNI_RANGE}")
    encap: Literal["vxlan"] = "vxlan"
    search: str = Field(min_length=1, description="the backend (plugin) name")
    mode: Literal["auto", "push", "on-demand"] = "auto"
    bridge: str | None = Field(default=None, min_length=1, max_length=15)
    properties: dict[str, PropValue] = Field(default_factory=dict)
    persist: bool = True

    @field_validator("vni")
    @classmethod
    def _vni(cls, value: int) -> int:
        if problem := vni_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("name", "bridge")
    @classmethod
    def _ifname(cls, value: str | None) -> str | None:
        if value is not None and (problem := ifname_problem(value)):
            raise ValueError(problem)
        return value


ADMIN_ALLOW_DEFAULT = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def split_host_port(text: str) -> tuple[str, int]:
    """`192.0.2.1:8080` or `[2001:db8::1]:8080` → (address, port); ValueError says what is wrong."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r} is not ADDR:PORT with an IP address (IPv6 as [ADDR]:PORT)") from None
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be 1-65535")
    return host, int(port)


class DaemonSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    state_dir: Path = Path("/var/lib/varpd")
    socket: Path = Path("/run/varpd/varpd.sock")
    reconcile_interval: float = Field(default=30.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["kv", "json"] = Field(default="kv", description="kv: key=value text; json: one object per line")
    miss_rate_limit: float = Field(default=0.2, ge=0, description="min seconds between lookups of one destination")
    cache_ttl: float = Field(default=300.0, gt=0)
    negative_ttl: float = Field(default=5.0, ge=0)
    admin_tcp: str | None = Field(default=None, description="ADDR:PORT ([V6ADDR]:PORT) for the admin API; off if unset")
    admin_allow: tuple[IPvAnyNetwork, ...] = Field(default=ADMIN_ALLOW_DEFAULT, description="CIDRs TCP clients may come from")

    @field_validator("admin_tcp")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value)
        return value

    @model_validator(mode="after")
    def _remote_admin_needs_allow_list(self) -> "DaemonSettings":
        # an admin API reachable from the network must say who may use it: refuse, don't guess
        if self.admin_tcp and "admin_allow" not in self.model_fields_set:
            host = ipaddress.ip_address(split_host_port(self.admin_tcp)[0])
            if not host.is_loopback:
                raise ValueError(f"admin_tcp {self.admin_tcp} is not a loopback address: "
                                 "set admin_allow to the CIDRs that may use the admin API")
        return self

    @property
    def admin_tcp_address(self) -> tuple[str, int] | None:
        return split_host_port(self.admin_tcp) if self.admin_tcp else None


class DaemonConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    overlays: tuple[OverlayConfig, ...] = ()


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem, naming the field path, e.g. `cfg.toml: overlays.0.vni: ...`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{source}: {loc}: {err['msg']}")
    return "; ".join(parts)


def load_config(path: str | Path) -> DaemonConfig:
    """Read a TOML (.toml) or YAML (.yaml/.yml) config; raise ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            raw = yaml.safe_load(text) or {}
        else:
            raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}".replace("\n", " ")) from None
    try:
        return DaemonConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None
