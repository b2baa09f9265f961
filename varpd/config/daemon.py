"""The daemon's configuration file (TOML or YAML) → frozen pydantic models.

This module and varpd.cli.main are the only places that read files or the
environment for configuration; everything below receives these objects.
"""

from __future__ import annotations

import ipaddress
import reprlib
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, IPvAnyNetwork, ValidationError, field_validator,
                      model_validator)

from varpd.backend.errors import ConfigError
from varpd.config.reading import MiB, read_text
from varpd.model.identifiers import VNI_RANGE, ifname_problem, netns_problem, vni_problem

MAX_CONFIG_SIZE = 16 * MiB  # thousands of overlays fit in a few MiB
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 64

PropValue = str | int | bool | float


def _netns_name(value: str) -> str:
    if problem := netns_problem(value):
        raise ValueError(problem)
    return value


NetnsName = Annotated[str, AfterValidator(_netns_name)]  # a name of /run/netns (overlays, VNICs)


class OverlayConfig(BaseModel):
    """One overlay as the user describes it (config file, CLI or admin API)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=15, description="the VXLAN netdev name (IFNAMSIZ)")
    vni: int = Field(description=f"the VXLAN VNI, {VNI_RANGE}")
    encap: Literal["vxlan"] = "vxlan"
    search: str = Field(min_length=1, description="the backend (plugin) name")
    mode: Literal["auto", "push", "on-demand"] = "auto"
    bridge: str | None = Field(default=None, min_length=1, max_length=15)
    netns: NetnsName | None = Field(default=None,
                              description="network namespace (a name of /run/netns) holding the devices; "
                                          "default: the daemon's own")
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
    # allow_inf_nan: `reconcile_interval = inf` never reconciled, `cache_ttl = inf` never expired
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    state_dir: Path = Path("/var/lib/varpd")
    socket: Path = Path("/run/varpd/varpd.sock")
    # the safety net's period: drift is repaired from kernel events within milliseconds, and a full
    # dump-and-diff also runs at start, on device re-appearance and after lost events (ENOBUFS);
    # a push overlay's safety pass is a check, followed by the full pass only if it differs. 15
    # minutes: it only bounds how long a change no kernel event announced could stay (none is known
    # but ENOBUFS, which starts a full pass itself); at 1M records the check costs ~6 s of CPU,
    # 0.7% of a core at 900 s and 2.1% at 300 s (README, fig9)
    reconcile_interval: float = Field(default=900.0, gt=0,
                                      description="seconds between safety passes (kernel tables checked against "
                                                  "the mapping; a full pass when they differ)")
    event_buffer: int = Field(default=8 * 1024 * 1024, ge=4096, le=1 << 30,
                              description="receive buffer (bytes) of the one socket that carries kernel misses and "
                                          "the devices' FDB/neighbour changes; an overflow means a full pass")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["kv", "json"] = Field(default="kv", description="kv: key=value text; json: one object per line")
    miss_rate_limit: float = Field(default=0.2, ge=0, description="min seconds between lookups of one destination")
    cache_ttl: float = Field(default=300.0, gt=0)
    negative_ttl: float = Field(default=5.0, ge=0)
    admin_tcp: str | None = Field(default=None, description="ADDR:PORT ([V6ADDR]:PORT) for the admin API; off if unset")
    admin_allow: tuple[IPvAnyNetwork, ...] = Field(default=ADMIN_ALLOW_DEFAULT, description="CIDRs TCP clients may come from")
    vxlan_layout: Literal["per-vni", "shared"] = Field(
        default="per-vni", description="per-vni: a VXLAN device (and bridge) per overlay; shared: one external "
                                       "vnifilter device and one VLAN-aware bridge for every push-mode overlay")
    shared_device: str = Field(default="vxvarpd", min_length=1, max_length=15,
                               description="vxlan_layout=shared: the VXLAN device's name")
    shared_bridge: str = Field(default="brvarpd", min_length=1, max_length=15,
                               description="vxlan_layout=shared: the VLAN-aware bridge's name")

    @field_validator("shared_device", "shared_bridge")
    @classmethod
    def _shared_ifname(cls, value: str) -> str:
        if problem := ifname_problem(value):
            raise ValueError(problem)
        return value

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

    @field_validator("overlays")
    @classmethod
    def _unique_names(cls, overlays: tuple[OverlayConfig, ...]) -> tuple[OverlayConfig, ...]:
        # two overlays of one name are one netdev: the second would silently replace the first
        first: dict[str, int] = {}
        for i, ov in enumerate(overlays):
            if ov.name in first:
                raise ValueError(f"overlays {first[ov.name]} and {i} have the same name {ov.name!r}")
            first[ov.name] = i
        return overlays


def _where(part: object) -> str:
    """One step of a field path, quoted (and cut) when it is not a plain short name."""
    text = str(part)
    return text if len(text) <= 64 and text.isprintable() and "." not in text else _QUOTE.repr(part)


def validation_problems(exc: ValidationError, top: str = "(top level)") -> tuple[str, ...]:
    """`field.path: message` per problem, one line each, hostile keys quoted and long messages cut:
    the one rendering of pydantic's errors for config files and admin requests alike."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(_where(p) for p in err["loc"]) or top
        msg = str(err["msg"]).removeprefix("Value error, ")
        msg = msg.replace("\n", " ") if len(msg) <= 300 else msg[:300].replace("\n", " ") + "..."
        lines.append(f"{loc}: {msg}")
    return tuple(lines)


def format_validation_error(exc: ValidationError, source: str) -> tuple[str, ...]:
    """One line per problem, naming the file and field path, e.g. `cfg.toml: overlays.0.vni: ...`."""
    return tuple(f"{source}: {line}" for line in validation_problems(exc))


class _DuplicateKey(Exception):
    def __init__(self, key: object, line: int, first: int) -> None:
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


class _TooDeep(Exception):
    pass


MAX_YAML_DEPTH = 64  # a config is a few levels deep; PyYAML's composer recurses per level


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, but a key given twice in one mapping is an error (PyYAML keeps the last silently),
    and a document nested deeper than MAX_YAML_DEPTH is refused as the composer reaches that level
    (letting it recurse to a RecursionError took 4 s for "a: " + "[" * 3000, and minutes under tracemalloc)."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _TooDeep
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the constructor below says so
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _DuplicateKey(key, line, first)
                seen[key] = line
        return super().construct_mapping(node, deep)


def _parse(text: str, path: Path) -> object:
    """The document of `text`; ConfigError (one line, naming the file) for anything the parser refuses."""
    kind = "YAML" if path.suffix in (".yaml", ".yml") else "TOML"
    try:
        if kind == "YAML":
            return yaml.load(text, Loader=_StrictLoader) or {}
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: " + " ".join(str(exc).split())) from None
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}:{exc.line}: duplicate key {_QUOTE.repr(exc.key)} (first on line {exc.first})") \
            from None
    except (RecursionError, _TooDeep):
        raise ConfigError(f"{path}: invalid {kind}: nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4300 digits, a date out of range
        raise ConfigError(f"{path}: invalid {kind}: {str(exc).split(';')[0]}") from None


def _state_dir_problem(state_dir: Path) -> str | None:
    """Why `state_dir` can never be the daemon's directory (it or a parent is not a directory), or None."""
    for p in (state_dir, *state_dir.parents):
        if p.exists():
            return None if p.is_dir() else f"{p} is not a directory"
    return None


def load_config(path: str | Path) -> DaemonConfig:
    """Read a TOML (.toml) or YAML (.yaml/.yml) config; raise ConfigError naming the file.

    Only a regular file of at most 16 MiB is read (a FIFO would block the daemon's start).
    """
    path = Path(path)
    _, text = read_text(path, MAX_CONFIG_SIZE)
    raw = _parse(text, path)
    try:
        config = DaemonConfig.model_validate(raw)
    except ValidationError as exc:
        lines = format_validation_error(exc, str(path))
        raise ConfigError("; ".join(lines), lines) from None
    problem = _state_dir_problem(config.daemon.state_dir)
    if problem is not None:
        raise ConfigError(f"{path}: daemon.state_dir: {problem}")
    return config
