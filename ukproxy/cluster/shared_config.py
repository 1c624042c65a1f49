"""The shared part of the configuration (upstreams, routes, [http]) and how a node merges it with its local file.

The shared part lives in etcd as TOML text under one key. A node's effective config is its local file
(listeners, network, cluster, workers...) with the shared tables in place of its own; it is written out
as TOML again because workers receive the config as text (Init.config_text) and read it themselves.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import replace
from typing import Any

from ukproxy.config import Config, ConfigError, ConfigIssue, loads

SHARED_KEYS = ("upstream", "route", "http")
MAX_SHARED_BYTES = 512 * 1024  # etcd's default request limit is 1.5 MiB; a config is far smaller


def parse_shared(text: str, where: str) -> dict[str, Any]:
    """The shared TOML as data, or ConfigError saying what is wrong with it (as a config file would)."""
    if len(text.encode()) > MAX_SHARED_BYTES:
        raise ConfigError([ConfigIssue(where, "", f"larger than {MAX_SHARED_BYTES} bytes")])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([ConfigIssue(where, "", f"not valid TOML: {e}")]) from None
    foreign = [k for k in data if k not in SHARED_KEYS]
    if foreign:
        raise ConfigError([ConfigIssue(where, k, "not part of the shared config (only upstream, route and http "
                                       "are shared; the rest stays in each node's local file)") for k in foreign])
    return data


def merged_text(local_text: str, shared: dict[str, Any]) -> str:
    """The local file's data with the shared tables replacing its own, as TOML."""
    data = tomllib.loads(local_text)
    for key in SHARED_KEYS:
        data.pop(key, None)
    data.update(shared)
    return dumps(data)


def load_merged(path: str, shared_text: str | None, label: str) -> Config:
    """Read the local file at `path` and merge the shared text into it (none: the local file alone).
    Errors name `label` (which shared revision) as well as the local file."""
    with open(path) as f:
        local_text = f.read()
    if shared_text is None:
        return loads(local_text, path)
    shared = parse_shared(shared_text, label)
    try:
        data_text = merged_text(local_text, shared)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([ConfigIssue(path, "", f"not valid TOML: {e}")]) from None
    # Errors name both sources; the config keeps the local file's path, which later reloads read again.
    return replace(loads(data_text, f"{path} + {label}"), path=path)


# A TOML writer for what tomllib reads back from a config: tables, arrays, strings, numbers, booleans.
# Everything under a table header is written inline, which TOML allows for any value.

def dumps(data: dict[str, Any]) -> str:
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not _is_table(v)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{_key(k)}]")
            lines.extend(f"{_key(kk)} = {_value(vv)}" for kk, vv in v.items())
        elif _is_table(v):
            for item in v:
                lines.append(f"\n[[{_key(k)}]]")
                lines.extend(f"{_key(kk)} = {_value(vv)}" for kk, vv in item.items())
    return "\n".join(lines) + "\n"


def _is_table(v: Any) -> bool:
    return isinstance(v, dict) or (isinstance(v, list) and bool(v) and all(isinstance(i, dict) for i in v))


def _key(k: str) -> str:
    return k if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k) else _string(k)


def _string(s: str) -> str:
    # JSON's escapes are TOML's, except that JSON may write astral characters as surrogate pairs: keep them raw.
    return json.dumps(s, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(i) for i in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(i)}" for k, i in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")  # dates: no config key takes one
