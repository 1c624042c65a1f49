"""allow/deny and limit_conn on a tcp listener, as nginx's stream access and limit_conn modules have them.

A connection is checked once, when it is accepted (after its PROXY header, whose source is the client):
access rules first-match by client address, then each limit_conn zone, keyed on the client's address
(`remote_addr`) or on the whole listener (`site`), counted across workers in the same shared zones as the
http listeners' (edge/limits.py). A refused connection is closed: L4 has nothing to answer. It is counted
in ukproxy_edge_refused{rule, zone}, as an http refusal is, and its session is logged with nginx stream's
$status: 403 (access) or 503 (limit_conn). An admitted one holds its places until it ends. Used by
proxy/tcp.py and proxy/tcp_native.py. docs/architecture.md, "The edge".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ukproxy.edge.access import AccessList
from ukproxy.edge.guard import OUTCOMES, SITE_KEY
from ukproxy.edge.limits import ConnectionCount
from ukproxy.edge.shared_zone import open_zone

if TYPE_CHECKING:
    from ukproxy.config import Config, ListenConfig

DENIED: Final = 403  # nginx stream's $status for a connection access refused
LIMITED: Final = 503  # and for one limit_conn refused (limit_conn_status's default)

Held = list[tuple[ConnectionCount, int]]  # the limit_conn places a connection holds until it ends


class TcpGuard:
    """One tcp listener's rules in this worker."""

    def __init__(self, config: Config, listen: ListenConfig):
        guard = listen.guard
        assert guard is not None
        self.access = AccessList(guard.access) if guard.access else None
        zones = {z.name: z for z in config.limit_conn_zones}
        self.counts: list[tuple[ConnectionCount, bool]] = []  # (count, keyed on the whole listener)
        for rule in guard.limit_conn or ():
            zone = zones[rule.zone]
            # The same zone file and cells as edge/guard.py opens for an http listener: one count for both.
            count = ConnectionCount(open_zone("conn", zone.name, zone.size, 4 * config.workers), zone.name,
                                    rule.conn, rule.status)
            self.counts.append((count, zone.key == "site"))

    @staticmethod
    def from_config(config: Config, listen: ListenConfig) -> TcpGuard | None:
        """None for a listener without rules: the accept path pays one `is None`."""
        if listen.guard is None or listen.guard.empty:
            return None
        return TcpGuard(config, listen)

    def admit(self, client_ip: bytes) -> tuple[int, Held | None]:
        """(0, the places held) for a connection let in; (DENIED or LIMITED, None) for one to close."""
        if self.access is not None and not self.access.allows(client_ip):
            OUTCOMES.add(("access", ""))
            return DENIED, None
        held: Held | None = None
        for count, whole_listener in self.counts:
            at = count.acquire(SITE_KEY if whole_listener else client_ip)
            if at < 0:
                release(held)
                OUTCOMES.add(("limit_conn", count.zone_name))
                return LIMITED, None
            if held is None:
                held = []
            held.append((count, at))
        return 0, held


def release(held: Held | None) -> None:
    """The connection ended: give back its limit_conn places."""
    for count, at in held or ():
        count.release(at)
