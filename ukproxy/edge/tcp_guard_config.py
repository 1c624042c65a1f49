"""Which guard keys a tcp listener may have: allow/deny (`access`) and `limit_conn`, as nginx's stream module
has them; the http-only ones are refused with their reason (`ukproxy check`). edge/tcp_guard.py applies
them. docs/architecture.md, "The edge".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ukproxy.config_reader import Issues, Table

if TYPE_CHECKING:
    from ukproxy.config import Config

_HTTP_ONLY = {
    "limit_req": "limit_req limits requests, and a tcp listener has none (nginx's stream module has no "
                 "limit_req either); limit connections with limit_conn",
    "auth_basic": "basic auth asks an HTTP request for credentials, and a tcp listener has no requests",
    "auth_basic_user_file": "basic auth asks an HTTP request for credentials, and a tcp listener has no requests",
}


def check_tcp_guard_keys(t: Table) -> None:
    """A [[listen]] table with protocol = "tcp": its http-only guard keys, and a limit_conn `status` (nothing
    is answered in L4: a refused connection is closed, and logged as 503)."""
    for key, reason in _HTTP_ONLY.items():
        if t.has(key):
            t.issues.add(t.key(key), reason)
    rules = t.data.get("limit_conn")
    items = rules if isinstance(rules, list) else [rules] if isinstance(rules, dict) else []
    for j, rule in enumerate(items):
        if isinstance(rule, dict) and "status" in rule:
            path = f"{t.key('limit_conn')}[{j}]" if isinstance(rules, list) else t.key("limit_conn")
            t.issues.add(f"{path}.status", "a tcp listener answers nothing: a connection past the limit is "
                                           "closed (logged with status 503)")


def check_tcp_zone_keys(config: Config, issues: Issues) -> None:
    """A tcp listener's limit_conn zones must key on the client's address or the whole listener: a tcp
    connection has no headers to key on."""
    zones = {z.name: z for z in config.limit_conn_zones}
    for i, listen in enumerate(config.listen):
        if listen.protocol != "tcp" or listen.guard is None:
            continue
        for j, rule in enumerate(listen.guard.limit_conn or ()):
            zone = zones.get(rule.zone)
            if zone is not None and zone.key.startswith("header:"):
                issues.add(f"listen[{i}].limit_conn[{j}].zone",
                           f"zone {zone.name!r} is keyed on {zone.key}, and a tcp connection has no headers; "
                           "use a limit_conn_zone keyed on \"remote_addr\" or \"site\"")
