"""Listening sockets, made by the master before any worker starts: in the host namespace, or, for a
service address (a listener on the backend network's gateway), inside the backend namespace."""

from __future__ import annotations

import socket
import threading

from ukproxy.config import Config, ListenConfig, is_service_address

ListenKey = tuple[str, int]


def open_listening_socket(lc: ListenConfig, reuseport: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in lc.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((lc.host, lc.port))
        sock.listen(lc.backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {lc.address}: {e.strerror}") from None
    return sock


def open_in_namespace(lc: ListenConfig, reuseport: bool, netns: str) -> socket.socket:
    """A listening socket made inside `netns`: setns moves only the calling thread, so a short-lived
    thread makes it there; a socket keeps the namespace it was made in."""
    from bridge import enter_netns

    result: list[socket.socket] = []
    failure: list[BaseException] = []

    def in_namespace() -> None:
        try:
            enter_netns(netns)
            result.append(open_listening_socket(lc, reuseport))
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=in_namespace, name=f"listen-{lc.address}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


class ListeningSockets:
    """The master's sockets: one per listener, or with reuseport one per listener and worker slot.

    Sockets for addresses that stay across a reload are kept, so no connection is refused.
    """

    def __init__(self) -> None:
        self.shared: dict[ListenKey, socket.socket] = {}
        self.per_worker: dict[tuple[ListenKey, int], socket.socket] = {}

    def open(self, config: Config, netns: str | None = None) -> None:
        """Open what `config` needs that isn't open yet; close what it no longer names. Service addresses
        are opened only once the backend namespace `netns` exists (a second call after the fleet starts)."""
        wanted_shared: set[ListenKey] = set()
        wanted_per_worker: set[tuple[ListenKey, int]] = set()
        opened: list[socket.socket] = []

        def make(lc: ListenConfig, reuseport: bool) -> socket.socket:
            if not is_service_address(config, lc.host):
                return open_listening_socket(lc, reuseport)
            if netns is None:
                raise OSError(0, f"cannot listen on {lc.address}: no backend network (service addresses need one)")
            return open_in_namespace(lc, reuseport, netns)

        try:
            for lc in config.listen:
                key = (lc.host, lc.port)
                later = netns is None and is_service_address(config, lc.host)  # kept, or opened on the next call
                if config.reuseport:
                    for slot in range(config.workers):
                        wanted_per_worker.add((key, slot))
                        if (key, slot) not in self.per_worker and not later:
                            self.per_worker[(key, slot)] = s = make(lc, True)
                            opened.append(s)
                else:
                    wanted_shared.add(key)
                    if key not in self.shared and not later:
                        self.shared[key] = s = make(lc, False)
                        opened.append(s)
        except OSError:
            for s in opened:
                s.close()
            self.shared = {k: s for k, s in self.shared.items() if s not in opened}
            self.per_worker = {k: s for k, s in self.per_worker.items() if s not in opened}
            raise
        for key in list(self.shared):
            if key not in wanted_shared:
                self.shared.pop(key).close()
        for pkey in list(self.per_worker):
            if pkey not in wanted_per_worker:
                self.per_worker.pop(pkey).close()

    def for_worker(self, config: Config, slot: int) -> list[socket.socket]:
        """The sockets worker `slot` serves, in the order of `config.listen`."""
        out = []
        for lc in config.listen:
            key = (lc.host, lc.port)
            out.append(self.per_worker[(key, slot)] if config.reuseport else self.shared[key])
        return out

    def close(self) -> None:
        for s in [*self.shared.values(), *self.per_worker.values()]:
            s.close()
        self.shared.clear()
        self.per_worker.clear()
