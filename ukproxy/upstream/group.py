"""An upstream as the proxy sees it: its settings, its servers and the balancer that picks among them.

The servers come from a source (a static list here; a VM pool later): the proxy only asks the
balancer, and never knows which source it got (DESIGN rule 2).
"""

from __future__ import annotations

from ukproxy.config import ServerConfig, UpstreamConfig
from ukproxy.upstream.balancing import Balancer, make_balancer
from ukproxy.upstream.server import Server


def server_from_config(c: ServerConfig) -> Server:
    return Server(
        host=c.host, port=c.port, weight=c.weight, max_fails=c.max_fails, fail_timeout=c.fail_timeout,
        max_conns=c.max_conns, backup=c.backup, down=c.down,
    )


class UpstreamGroup:
    def __init__(self, config: UpstreamConfig, servers: list[Server] | None = None):
        self.config = config
        self.name = config.name
        if servers is None:
            servers = [server_from_config(s) for s in config.servers]
        options = {"consistent": config.consistent} if config.balance == "hash" else {}
        self.balancer: Balancer = make_balancer(config.balance, servers, **options)

    @property
    def servers(self) -> list[Server]:
        return self.balancer.servers

    def set_servers(self, servers: list[Server]) -> None:
        self.balancer.set_servers(servers)
