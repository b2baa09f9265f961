"""Typed overlay properties, named `<module>/<name>` as in libvarpd.

Unlike the original, ranges and possible values are enforced, not just shown.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from varpd.backend.errors import PropertyError

MAX_NAME = 64
MAX_STRING = 256


class PropType(enum.Enum):
    INT = "int"
    UINT = "uint"
    IP = "ip"
    STRING = "string"
    BOOL = "bool"
    SECONDS = "seconds"  # a duration, fractions allowed ("0.5"), never negative


class Protection(enum.Enum):
    """REQUIRED must be given at create (and may change later); WRITE may change on a live overlay;
    READ never changes. The values are show-overlay's PERM column."""

    READ = "r-"
    WRITE = "rw"
    REQUIRED = "rw*"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class PropertySpec:
    name: str
    type: PropType
    protection: Protection = Protection.WRITE
    default: Any = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    choices: tuple[str, ...] = ()
    description: str = ""
    secret: bool = False  # never shown: show-overlay and the admin API print "********"

    def __post_init__(self) -> None:
        module, sep, short = self.name.partition("/")
        if not sep or not module or not short or len(self.name) > MAX_NAME:
            raise ValueError(f"property name {self.name!r} is not <module>/<name> of at most {MAX_NAME} bytes")

    @property
    def required(self) -> bool:
        return self.protection is Protection.REQUIRED

    def parse(self, raw: Any) -> Any:
        """Turn a raw value (CLI string, TOML value) into the typed value, or raise PropertyError."""
        try:
            value = self._convert(raw)
        except (ValueError, TypeError) as exc:
            raise PropertyError(self.name, f"{raw!r} is not a valid {self.type.value} ({exc})") from None
        self._check_bounds(value)
        return value

    def _convert(self, raw: Any) -> Any:
        if self.type is PropType.BOOL:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError("expected true or false")
        if self.type in (PropType.INT, PropType.UINT):
            if isinstance(raw, bool):
                raise ValueError("a boolean is not a number")
            try:
                return int(str(raw).strip(), 0)
            except ValueError:
                raise ValueError("expected a whole number") from None
        if self.type is PropType.SECONDS:
            if isinstance(raw, bool):
                raise ValueError("a boolean is not a number")
            try:
                value = float(str(raw).strip())
            except ValueError:
                raise ValueError("expected a number of seconds, fractions allowed") from None
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("expected a finite number of seconds")
            return value
        if self.type is PropType.IP:
            return ipaddress.ip_address(str(raw).strip())
        text = str(raw)
        if len(text.encode()) > MAX_STRING:
            raise ValueError(f"longer than {MAX_STRING} bytes")
        return text

    def _check_bounds(self, value: Any) -> None:
        if self.type in (PropType.UINT, PropType.SECONDS) and value < 0:
            raise PropertyError(self.name, f"{format_value(value)} is negative")
        if self.minimum is not None and value < self.minimum:
            raise PropertyError(self.name, f"{format_value(value)} is below the minimum {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise PropertyError(self.name, f"{format_value(value)} is above the maximum {self.maximum}")
        if self.choices and str(value) not in self.choices:
            raise PropertyError(self.name, f"{value!r} is not one of {', '.join(self.choices)}")

    def possible(self) -> str:
        """The POSSIBLE column of show-overlay: choices, or a range `lo-hi` (unsigned and durations start at 0)."""
        if self.choices:
            return ",".join(self.choices)
        if self.type is PropType.BOOL:
            return "true,false"
        if self.minimum is not None or self.maximum is not None:
            lo = self.minimum
            if lo is None and self.type in (PropType.UINT, PropType.SECONDS):
                lo = 0
            if lo is None:
                return f"<={format_value(self.maximum)}"  # "-5" would read as minus five
            if self.maximum is None:
                return f">={format_value(lo)}"
            return f"{format_value(lo)}-{format_value(self.maximum)}"
        return "--"

    def show(self, value: Any) -> str:
        """A value as show-overlay prints it (and the docs write it): booleans `true`/`false`."""
        if value is None:
            return "--"
        return "********" if self.secret else format_value(value)


def format_value(value: Any) -> str:
    """true/false for booleans, 0.5 (not 0.5000) for durations, str() for the rest."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def resolve(specs: Iterable[PropertySpec], given: Mapping[str, Any], *, known: Iterable[str] = ()) -> dict[str, Any]:
    """Validate `given` against `specs`: unknown names, missing required ones, types and ranges.

    `known` lists names that other layers own (e.g. vxlan/*), which are let through untouched.
    """
    table = {spec.name: spec for spec in specs}
    others = set(known)
    values: dict[str, Any] = {}
    for name, raw in given.items():
        spec = table.get(name)
        if spec is None:
            if name in others:
                continue
            raise PropertyError(name, "unknown property")
        values[name] = spec.parse(raw)
    for spec in table.values():
        if spec.name not in values:
            if spec.required:
                raise PropertyError(spec.name, "unset required property")
            if spec.default is not None:
                values[spec.name] = spec.parse(spec.default)
    return values
