"""Reading one TOML table into typed values while remembering where each value came from.

Every problem is collected (not raised at once) so `ukproxy check` can show all of them,
each naming the file, the key path (`upstream[1].servers[0]`) and the reason.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
_MISSING: Any = object()

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}  # d: hsts = "180d"
_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*$")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.reason}"


class ConfigError(Exception):
    """The configuration is invalid; `issues` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class Invalid(Exception):
    """One value is wrong; caught by the reader and recorded as an issue."""


class Issues:
    """The list of problems found while reading one file."""

    def __init__(self, file: str):
        self.file = file
        self.found: list[ConfigIssue] = []

    def add(self, key: str, reason: str) -> None:
        self.found.append(ConfigIssue(self.file, key, reason))


class Table:
    """A TOML table being read: typed getters record errors and unknown keys are reported at `done()`."""

    def __init__(self, data: dict[str, Any], path: str, issues: Issues):
        self.data = data
        self.path = path
        self.issues = issues
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, convert: Callable[[Any], T], default: T = _MISSING) -> T:
        """The value at `name` passed through `convert`; a missing required key or a bad value is recorded."""
        self.seen.add(name)
        if name not in self.data:
            if default is _MISSING:
                self.issues.add(self.key(name), "required key is missing")
            return default if default is not _MISSING else None  # type: ignore[return-value]
        try:
            return convert(self.data[name])
        except Invalid as e:
            self.issues.add(self.key(name), str(e))
            return default if default is not _MISSING else None  # type: ignore[return-value]

    def table(self, name: str) -> Table:
        self.seen.add(name)
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            self.issues.add(self.key(name), f"expected a table, got {type_name(value)}")
            value = {}
        return Table(value, self.key(name), self.issues)

    def has(self, name: str) -> bool:
        return name in self.data

    def tables(self, name: str) -> Iterator[Table]:
        """An array of tables (`[[name]]`), each with its index in the key path."""
        self.seen.add(name)
        value = self.data.get(name, [])
        if not isinstance(value, list):
            self.issues.add(self.key(name), f"expected an array of tables, got {type_name(value)}")
            return
        for i, item in enumerate(value):
            path = f"{self.key(name)}[{i}]"
            if not isinstance(item, dict):
                self.issues.add(path, f"expected a table, got {type_name(item)}")
                continue
            yield Table(item, path, self.issues)

    def done(self) -> None:
        for name in self.data:
            if name not in self.seen:
                self.issues.add(self.key(name), "unknown key")


def type_name(value: Any) -> str:
    return {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table"
    }.get(type(value), type(value).__name__)


# Converters: each takes the raw TOML value and returns the typed one or raises Invalid.


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {type_name(value)}")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {type_name(value)}")
    return value


def integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected an integer, got {type_name(value)}")
        if low is not None and value < low:
            raise Invalid(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise Invalid(f"must be at most {high}, got {value}")
        return value

    return convert


def header_name(value: Any) -> str:
    name = string(value)
    if not HEADER_NAME.fullmatch(name):
        raise Invalid(f"{name!r} is not a header name")
    return name


def one_of(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise Invalid(f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return value

    return convert


def duration(value: Any) -> float:
    """Seconds, from a number (seconds) or a string with a unit: "500ms", "5s", "2m", "1h", "180d"."""
    if isinstance(value, bool):
        raise Invalid("expected a duration like 5 or \"500ms\", got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise Invalid(f"expected a duration like 5 or \"500ms\", got {value!r}")
    if seconds < 0:
        raise Invalid(f"must not be negative, got {value!r}")
    return seconds


def size(value: Any) -> int:
    """Bytes, from an integer or a string with a unit: "16k", "1m", "2MiB"."""
    if isinstance(value, bool):
        raise Invalid("expected a size like 8192 or \"16k\", got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise Invalid(f"must not be negative, got {value}")
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    raise Invalid(f"expected a size like 8192 or \"16k\", got {value!r}")


def host_port(value: Any) -> tuple[str, int]:
    """"host:port" or "[v6]:port" → (host, port); the host must be an IP address (no DNS on the data path)."""
    if not isinstance(value, str):
        raise Invalid(f"expected \"host:port\", got {type_name(value)}")
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise Invalid(f"expected \"host:port\", got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise Invalid(f"{host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise Invalid(f"port must be 1-65535, got {port_text!r}")
    return host, int(port_text)


def network(value: Any) -> ipaddress.IPv4Network:
    if not isinstance(value, str):
        raise Invalid(f"expected a CIDR like \"10.77.0.0/24\", got {type_name(value)}")
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as e:
        raise Invalid(f"not an IPv4 network: {e}") from None
    if net.num_addresses < 8:
        raise Invalid(f"{value} is too small: a /29 or larger is needed")
    return net


def list_of(convert: Callable[[Any], T]) -> Callable[[Any], tuple[T, ...]]:
    def convert_list(value: Any) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise Invalid(f"expected an array, got {type_name(value)}")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(convert(item))
            except Invalid as e:
                raise Invalid(f"item {i}: {e}") from None
        return tuple(out)

    return convert_list
