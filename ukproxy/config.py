"""ukproxy's configuration: TOML loaded into frozen, typed objects.

`load(path)` returns a `Config` or raises `ConfigError` listing every problem, each with the
file, the key path and the reason (as `nginx -t` would).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ukproxy.config_reader import (
    ConfigError,
    ConfigIssue,
    Invalid,
    Issues,
    Table,
    boolean,
    duration,
    host_port,
    integer,
    list_of,
    network,
    one_of,
    size,
    string,
)
from ukproxy.edge import rules_config as edge_config
from ukproxy.edge.compress_config import NO_KEYS, CompressKeys, read_compress_keys
from ukproxy.edge.guard_config import (
    GUARD_KEYS,
    GuardConfig,
    LimitZoneConfig,
    check_guards,
    read_guard,
    read_zone,
)
from ukproxy.edge.tcp_guard_config import check_tcp_guard_keys, check_tcp_zone_keys
from ukproxy.tls.check import check_certificates
from ukproxy.tls.config import TlsConfig, read_https_redirect, read_tls
from ukproxy.vm.share import DEFAULT_SHARE_TAG, access_problem

__all__ = ["Config", "ConfigError", "ConfigIssue", "load", "loads"]

DEFAULT_MACHINE = "microvm"  # boots sooner and takes less memory than pc (bench/vm_density.py)
BALANCE_METHODS = ("round_robin", "least_conn", "least_time", "random", "hash", "ip_hash")
_SHARE_TAG = re.compile(r"[A-Za-z0-9_.-]{1,31}")


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    weight: int = 1
    max_fails: int = 1
    fail_timeout: float = 10.0
    max_conns: int = 0
    backup: bool = False
    down: bool = False


@dataclass(frozen=True)
class VmConfig:
    """How to boot one VM of an upstream: the unikernel image and its arguments."""

    image: str
    args: str = ""
    memory_mib: int = 16
    accel: str = "auto"
    port: int = 80
    boot_timeout: float = 10.0
    stop_timeout: float = 3.0
    max_per_cpu: int = 16
    share: str | None = None  # a host folder given to every VM over virtio-9p (absolute once loaded)
    share_writable: bool = False
    share_tag: str = DEFAULT_SHARE_TAG  # the 9P mount tag the guest looks for
    machine: str = DEFAULT_MACHINE  # QEMU's machine: "microvm" (virtio-mmio) or "pc" (PCI)
    # The services a VM reaches, as (name, "ip:port") of service addresses: passed as name=ip:port.
    services: tuple[tuple[str, str], ...] = ()

    def kernel_args(self) -> str:
        """The service's own arguments and its services' addresses, for the kernel command line."""
        return " ".join([self.args, *(f"{name}={address}" for name, address in self.services)]).strip()


@dataclass(frozen=True)
class PoolConfig:
    """Per worker: how many VMs, how busy each may be, and what to do when all are busy or idle."""

    min: int = 1
    max: int = 4
    max_conns: int = 64
    overflow: str = "spawn"
    queue_timeout: float = 5.0
    surplus: str = "destroy"
    idle_timeout: float = 30.0
    # A pool whose VM holds state (its writable share): at most one VM, never stopped for being idle.
    stateful: bool = False


@dataclass(frozen=True)
class PlacementConfig:
    """Where the scheduler may and would rather put the upstream's VMs (ukproxy/vm/scheduler.py)."""

    cpus: tuple[int, ...] | None = None  # hard node affinity: only these CPUs
    anti_affinity: str = "preferred"  # from the upstream's own VMs: "none", "preferred" or "required"
    near: tuple[str, ...] = ()  # upstreams whose VMs it would rather share a CPU with


@dataclass(frozen=True)
class HealthConfig:
    """Active checks of every server. A VM pool without [upstream.health] gets the defaults (a TCP
    liveness check); `type = "none"` turns checks off (UpstreamConfig.health is None)."""

    type: str = "tcp"
    interval: float = 2.0
    timeout: float = 1.0
    path: str = "/health"
    fails: int = 2
    passes: int = 1


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    balance: str = "round_robin"
    hash_key: str = "remote_addr"
    consistent: bool = True
    servers: tuple[ServerConfig, ...] = ()
    vm: VmConfig | None = None
    pool: PoolConfig = field(default_factory=PoolConfig)
    health: HealthConfig | None = None
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    send_timeout: float = 60.0
    idle_timeout: float = 600.0
    tries: int = 3
    next_upstream_timeout: float = 0.0
    next_upstream_statuses: tuple[int, ...] = ()
    keepalive: int = 32
    keepalive_timeout: float = 60.0
    proxy_protocol: int = 0  # tcp: the PROXY protocol version sent on each new connection (edge/proxy_protocol.py)
    half_close: bool = True  # tcp: pass an upstream's EOF on and keep the client's way open (false: end the pair)


@dataclass(frozen=True)
class ListenConfig:
    host: str
    port: int
    protocol: str = "tcp"
    upstream: str | None = None
    backlog: int = 511
    guard: GuardConfig | None = None  # limit_req, limit_conn, access, auth_basic (edge/guard_config.py)
    compress: CompressKeys = NO_KEYS  # gzip_* and brotli_* keys (edge/compress_config.py)
    proxy_protocol: bool = False  # every connection starts with a PROXY header (edge/proxy_protocol.py)
    proxy_protocol_timeout: float = 30.0
    http2: bool = False  # HTTP/2 for clients: h2c with prior knowledge on plain http (docs/architecture.md)
    tls: TlsConfig | None = None  # ssl = true and the ssl_* keys (tls/config.py)
    https_redirect: int | None = None  # a plain http listener sends every request to https on this port
    tcp_relay: str = "native"  # tcp: "native" relays in C when built (proxy/tcp_native.py), "python" in tcp.py

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RouteConfig:
    upstream: str
    host: str = "*"
    prefix: str = "/"
    strip_prefix: bool = False
    guard: GuardConfig | None = None  # limit_req, limit_conn, access, auth_basic over the listener's (edge/)
    compress: CompressKeys = NO_KEYS  # gzip_* and brotli_* keys over the listener's (edge/compress_config.py)
    rules: edge_config.RouteRulesConfig | None = None  # header, rewrite and return rules (edge/)


@dataclass(frozen=True)
class HttpConfig:
    keepalive_timeout: float = 75.0
    keepalive_requests: int = 1000
    client_header_timeout: float = 60.0
    client_body_timeout: float = 60.0
    client_max_body_size: int = 1024 * 1024
    max_header_size: int = 8192
    max_headers: int = 100
    max_uri_size: int = 8192
    compress: CompressKeys = NO_KEYS  # gzip_* and brotli_* keys for every http listener (edge/compress_config.py)
    # HTTP/2 (listen.http2): limits and the flood guards' budgets, per connection (proxy/h2_*.py)
    http2_max_concurrent_streams: int = 128
    http2_max_header_list_size: int = 16384
    http2_body_preread_size: int = 65536  # each stream's receive window
    http2_max_resets: int = 200  # client stream resets per http2_flood_window before GOAWAY
    http2_max_control_frames: int = 500  # SETTINGS, PING, PRIORITY, empty DATA, unknown frames, likewise
    http2_flood_window: float = 10.0


@dataclass(frozen=True)
class LogConfig:
    error_log: str = "stderr"
    level: str = "info"
    access_log: str = "off"
    access_format: str = "combined"


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9145


@dataclass(frozen=True)
class NetworkConfig:
    """The backend network: a namespace holding a bridge and the VMs' TAPs."""

    netns: str = "ukproxy"
    bridge: str = "ukbr0"
    subnet: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.IPv4Network("10.77.0.0/24"))
    mode: str = "auto"


@dataclass(frozen=True)
class ClusterConfig:
    """[cluster]: this node's place in a cluster sharing config and membership through etcd (docs/cluster.md)."""

    endpoints: tuple[str, ...]
    name: str = "ukproxy"
    node_id: str = field(default_factory=socket.gethostname)
    peer: str = ""  # host:port where peer nodes reach this node's proxy
    lease_ttl: int = 10  # seconds: how long after this node dies its record vanishes
    spill: bool = True  # send requests to a peer with free capacity when a VM pool here is full


@dataclass(frozen=True)
class Config:
    path: str
    workers: int
    text: str = field(default="", repr=False)  # the TOML it came from, handed to workers as validated
    worker_connections: int = 1024
    accept_mutex: bool = False
    accept_mutex_delay: float = 0.5
    multi_accept: bool = False
    reuseport: bool = True  # unless accept_mutex (see _read_config)
    cpu_affinity: tuple[int, ...] | None = None
    pid_file: str = "run/ukproxy.pid"
    user: str | None = None
    group: str | None = None
    worker_shutdown_timeout: float = 10.0
    worker_heartbeat_timeout: float = 30.0  # a worker silent this long is hung: killed and replaced
    worker_rlimit_nofile: int | None = None
    listen: tuple[ListenConfig, ...] = ()
    upstreams: tuple[UpstreamConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    http: HttpConfig = field(default_factory=HttpConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    cluster: ClusterConfig | None = None  # [cluster]: ukproxy/cluster/
    # [placement]: the scheduler's score weights that differ from its defaults, as (plugin, weight)
    score_weights: tuple[tuple[str, int], ...] = ()
    # [[limit_req_zone]], [[limit_conn_zone]]: shared by every worker (edge/shared_zone.py)
    limit_req_zones: tuple[LimitZoneConfig, ...] = ()
    limit_conn_zones: tuple[LimitZoneConfig, ...] = ()
    real_ip: edge_config.RealIpConfig | None = None  # [real_ip]: edge/realip.py
    request_id: edge_config.RequestIdConfig | None = None  # [request_id]: edge/request_id.py

    def upstream(self, name: str) -> UpstreamConfig:
        for u in self.upstreams:
            if u.name == name:
                return u
        raise KeyError(name)


CPUS_ENV = "UKPROXY_CPUS"  # the master's usable CPUs, for workers (taskset pins each to one)


def usable_cpus() -> list[int]:
    """The CPUs ukproxy may use: the master's affinity. A worker, pinned to one CPU, is told them."""
    told = os.environ.get(CPUS_ENV)
    if told:
        return sorted(int(c) for c in told.split(","))
    return sorted(os.sched_getaffinity(0))


def load(path: str | os.PathLike[str]) -> Config:
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError([ConfigIssue(path, "", f"cannot read: {e.strerror}")]) from None
    return loads(text, path)


def loads(text: str, path: str = "<string>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([ConfigIssue(path, "", f"not valid TOML: {e}")]) from None
    issues = Issues(path)
    config = _read_config(Table(data, "", issues), path)
    if issues.found:
        raise ConfigError(issues.found)
    return replace(config, text=text)


def _workers(value: Any) -> int:
    if value == "auto":
        return len(usable_cpus())
    return integer(1, 1024)(value)


def _cpu_affinity(value: Any) -> tuple[int, ...] | None:
    """"auto": worker i on the i-th usable CPU; "off": no pinning; or an explicit list of CPUs."""
    cpus = usable_cpus()
    if value == "off":
        return None
    if value == "auto":
        return tuple(cpus)
    listed = list_of(integer(0))(value) if isinstance(value, list) else None
    if listed is None:
        raise Invalid(f"expected \"auto\", \"off\" or an array of CPU numbers, got {value!r}")
    unusable = [c for c in listed if c not in cpus]
    if unusable:
        raise Invalid(f"CPUs {unusable} are not usable here (usable: {cpus})")
    return listed


def _read_config(top: Table, path: str) -> Config:
    workers = top.get("workers", _workers, len(usable_cpus()))
    accept_mutex = top.get("accept_mutex", boolean, False)
    config = Config(
        path=path,
        workers=workers,
        worker_connections=top.get("worker_connections", integer(8, 1_000_000), 1024),
        accept_mutex=accept_mutex,
        accept_mutex_delay=top.get("accept_mutex_delay", duration, 0.5),
        multi_accept=top.get("multi_accept", boolean, False),
        # On unless the mutex is: uvloop accepts every pending connection per wakeup, so on one shared
        # socket a burst of connections lands on one worker (ab -k: 31 of 32); the kernel spreads
        # reuseport sockets by hash.
        reuseport=top.get("reuseport", boolean, not accept_mutex),
        cpu_affinity=top.get("cpu_affinity", _cpu_affinity, _cpu_affinity("auto")),
        pid_file=top.get("pid_file", string, "run/ukproxy.pid"),
        user=top.get("user", string, None),
        group=top.get("group", string, None),
        worker_shutdown_timeout=top.get("worker_shutdown_timeout", duration, 10.0),
        worker_heartbeat_timeout=top.get("worker_heartbeat_timeout", duration, 30.0),
        worker_rlimit_nofile=top.get("worker_rlimit_nofile", integer(64), None),
        listen=tuple(_read_listen(t) for t in top.tables("listen")),
        upstreams=tuple(_read_upstream(t) for t in top.tables("upstream")),
        routes=tuple(_read_route(t) for t in top.tables("route")),
        http=_read_http(top.table("http")),
        log=_read_log(top.table("log")),
        metrics=_read_metrics(top.table("metrics")),
        network=_read_network(top.table("network")),
        cluster=_read_cluster(top.table("cluster")) if top.has("cluster") else None,
        score_weights=_read_score_weights(top.table("placement")),
        limit_req_zones=tuple(read_zone(t, "req") for t in top.tables("limit_req_zone")),
        limit_conn_zones=tuple(read_zone(t, "conn") for t in top.tables("limit_conn_zone")),
        real_ip=edge_config.read_real_ip(top),
        request_id=edge_config.read_request_id(top),
    )
    top.done()
    _check_references(config, top)
    _check_shares(config, top)
    _check_service_addresses(config, top)
    _check_stateful(config, top)
    _check_placement(config, top)
    check_guards((*config.limit_req_zones, *config.limit_conn_zones),
                 [*((f"listen[{i}]", lc.guard) for i, lc in enumerate(config.listen)),
                  *((f"route[{i}]", r.guard) for i, r in enumerate(config.routes))], top.issues)
    check_tcp_zone_keys(config, top.issues)
    edge_config.check_edge(config, top)
    check_certificates(config, top.issues)
    return _tcp_pool_defaults(config, top)


# What one unikernel VM holds at once (its connection layer's max_conns default).
VM_CONNECTIONS = 512


def _tcp_pool_defaults(config: Config, top: Table) -> Config:
    """A pool behind a tcp listener defaults max_conns to what a VM holds itself, not to the 64 requests
    in flight an http pool allows: a tcp client holds its VM connection for its whole life, so with 64 a
    few dozen slow clients held every slot and a fresh client queued behind them."""
    tcp_upstreams = {listen.upstream for listen in config.listen if listen.protocol == "tcp"}
    raw = top.data.get("upstream", [])
    upstreams = []
    for i, u in enumerate(config.upstreams):
        given = i < len(raw) and isinstance(raw[i], dict) and "max_conns" in raw[i].get("pool", {})
        if u.name in tcp_upstreams and u.vm is not None and not given:
            u = replace(u, pool=replace(u.pool, max_conns=VM_CONNECTIONS))
        upstreams.append(u)
    return replace(config, upstreams=tuple(upstreams))


def _read_listen(t: Table) -> ListenConfig:
    host, port = t.get("address", host_port, ("", 0))
    listen = ListenConfig(
        host=host,
        port=port,
        protocol=t.get("protocol", one_of("tcp", "http"), "tcp"),
        upstream=t.get("upstream", string, None),
        backlog=t.get("backlog", integer(1, 65535), 511),
        guard=read_guard(t),
        compress=read_compress_keys(t),
        http2=t.get("http2", boolean, False),
        tls=read_tls(t),
        https_redirect=read_https_redirect(t),
        tcp_relay=t.get("tcp_relay", one_of("native", "python"), "native"),
    )
    if t.has("tcp_relay") and listen.protocol != "tcp":
        t.issues.add(t.key("tcp_relay"), "is for a tcp listener (protocol = \"tcp\")")
    if listen.tls is not None and listen.protocol != "http":
        t.issues.add(t.key("ssl"), "TLS termination needs protocol = \"http\" (a tcp listener passes TLS through)")
    if listen.https_redirect is not None and (listen.protocol != "http" or listen.tls is not None):
        t.issues.add(t.key("https_redirect"), "is for a plain http listener (protocol = \"http\", no ssl)")
    if listen.http2 and listen.protocol != "http":
        t.issues.add(t.key("http2"), "HTTP/2 needs protocol = \"http\"")
    if listen.compress != NO_KEYS and listen.protocol != "http":
        first = next(k for k in t.data if k.startswith(("gzip", "brotli")))
        t.issues.add(t.key(first), "compression needs protocol = \"http\"")
    proxy_protocol, proxy_protocol_timeout = edge_config.read_listen_proxy_protocol(t)
    listen = replace(listen, proxy_protocol=proxy_protocol, proxy_protocol_timeout=proxy_protocol_timeout)
    if listen.guard is not None and listen.protocol == "tcp":  # allow/deny and limit_conn only (edge/tcp_guard.py)
        check_tcp_guard_keys(t)
    elif listen.guard is not None and listen.protocol != "http":
        t.issues.add(t.key(next(k for k in GUARD_KEYS if t.has(k))), "limits, access and auth need protocol = \"http\"")
    if listen.protocol == "tcp" and listen.upstream is None and not t.has("upstream"):
        t.issues.add(t.key("upstream"), "a tcp listener needs an upstream")
    t.done()
    return listen


def _read_server(value: Any, path: str, issues: Issues) -> ServerConfig | None:
    if isinstance(value, str):
        try:
            host, port = host_port(value)
        except Invalid as e:
            issues.add(path, str(e))
            return None
        return ServerConfig(host, port)
    if not isinstance(value, dict):
        issues.add(path, "expected \"host:port\" or a table with address = \"host:port\"")
        return None
    t = Table(value, path, issues)
    host, port = t.get("address", host_port, ("", 0))
    server = ServerConfig(
        host=host,
        port=port,
        weight=t.get("weight", integer(1, 1000), 1),
        max_fails=t.get("max_fails", integer(0), 1),
        fail_timeout=t.get("fail_timeout", duration, 10.0),
        max_conns=t.get("max_conns", integer(0), 0),
        backup=t.get("backup", boolean, False),
        down=t.get("down", boolean, False),
    )
    t.done()
    return server


def _read_upstream(t: Table) -> UpstreamConfig:
    raw_servers = t.data.get("servers", [])
    t.seen.add("servers")
    servers: list[ServerConfig] = []
    if not isinstance(raw_servers, list):
        t.issues.add(t.key("servers"), "expected an array of servers")
    else:
        for i, raw in enumerate(raw_servers):
            server = _read_server(raw, f"{t.key('servers')}[{i}]", t.issues)
            if server is not None:
                servers.append(server)
    vm = _read_vm(t.table("vm")) if t.has("vm") else None
    pool = _read_pool(t.table("pool"))
    # VM pools get a liveness check unless told otherwise; static servers only when configured.
    health = _read_health(t.table("health")) if t.has("health") else HealthConfig() if vm is not None else None
    upstream = UpstreamConfig(
        name=t.get("name", string, ""),
        balance=t.get("balance", one_of(*BALANCE_METHODS), "round_robin"),
        hash_key=t.get("hash_key", string, "remote_addr"),
        consistent=t.get("consistent", boolean, True),
        servers=tuple(servers),
        vm=vm,
        pool=pool,
        health=health,
        placement=_read_placement(t.table("placement")),
        connect_timeout=t.get("connect_timeout", duration, 5.0),
        read_timeout=t.get("read_timeout", duration, 60.0),
        send_timeout=t.get("send_timeout", duration, 60.0),
        idle_timeout=t.get("idle_timeout", duration, 600.0),
        tries=t.get("tries", integer(1, 100), 3),
        next_upstream_timeout=t.get("next_upstream_timeout", duration, 0.0),
        next_upstream_statuses=t.get("next_upstream_statuses", list_of(one_of_int(502, 503, 504)), ()),
        keepalive=t.get("keepalive", integer(0, 100_000), 32),
        keepalive_timeout=t.get("keepalive_timeout", duration, 60.0),
        proxy_protocol=edge_config.read_upstream_proxy_protocol(t),
        half_close=t.get("half_close", boolean, True),
    )
    if vm is None and not servers and isinstance(raw_servers, list):
        t.issues.add(t.key("servers"), "an upstream needs servers or a [vm] section")
    if vm is not None and servers:
        t.issues.add(t.key("servers"), "an upstream has either servers or a [vm] section, not both")
    t.done()
    return upstream


def one_of_int(*choices: int):
    def convert(value: Any) -> int:
        if value not in choices or isinstance(value, bool):
            raise Invalid(f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        return int(value)

    return convert


def _read_vm(t: Table) -> VmConfig:
    vm = VmConfig(
        image=t.get("image", string, ""),
        args=t.get("args", string, ""),
        memory_mib=t.get("memory", integer(4, 65536), 16),
        accel=t.get("accel", one_of("auto", "tcg", "kvm"), "auto"),
        port=t.get("port", integer(1, 65535), 80),
        boot_timeout=t.get("boot_timeout", duration, 10.0),
        stop_timeout=t.get("stop_timeout", duration, 3.0),
        max_per_cpu=t.get("max_per_cpu", integer(1, 1024), 16),
        share=t.get("share", _folder, None),
        share_writable=t.get("share_writable", boolean, False),
        share_tag=t.get("share_tag", _share_tag, DEFAULT_SHARE_TAG),
        machine=t.get("machine", one_of("microvm", "pc"), DEFAULT_MACHINE),
        services=t.get("services", _services, ()),
    )
    if not t.has("share") and (t.has("share_writable") or t.has("share_tag")):  # a bad folder is reported already
        t.issues.add(t.key("share"), "share_writable and share_tag need a share folder")
    t.done()
    return vm


def _folder(value: Any) -> str:
    """A host folder, absolute: relative paths are taken from the directory ukproxy runs in."""
    text = string(value)
    if not text or "\0" in text:
        raise Invalid(f"expected a folder path, got {value!r}")
    path = os.path.abspath(text)
    if not os.path.isdir(path):
        raise Invalid(f"{path} is not a folder" if os.path.exists(path) else f"no folder {path}")
    return path


_SERVICE_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")
# Arguments the kernel or ukproxy itself puts on the command line: a service may not take their names.
_RESERVED_ARGS = {"ip", "gw", "port", "name", "service", "share_tag"}


def _services(value: Any) -> tuple[tuple[str, str], ...]:
    """{name = "ip:port"}: each becomes name=ip:port on the VM's kernel command line."""
    if not isinstance(value, dict):
        raise Invalid(f'expected a table such as {{kv = "10.77.0.1:6379"}}, got {value!r}')
    out = []
    for name, address in value.items():
        if not _SERVICE_NAME.fullmatch(name) or name in _RESERVED_ARGS:
            raise Invalid(f"{name!r} cannot name a service (lower-case letters, digits and '_'; "
                          f"not one of {', '.join(sorted(_RESERVED_ARGS))})")
        host, port = host_port(address)
        out.append((name, f"{host}:{port}"))
    return tuple(out)


def _share_tag(value: Any) -> str:
    text = string(value)
    if not _SHARE_TAG.fullmatch(text):
        raise Invalid(f"a mount tag is 1-31 letters, digits, '_', '.' or '-', got {value!r}")
    return text


def _read_pool(t: Table) -> PoolConfig:
    pool = PoolConfig(
        min=t.get("min", integer(0, 256), 1),
        max=t.get("max", integer(1, 256), 4),
        max_conns=t.get("max_conns", integer(1), 64),
        overflow=t.get("overflow", one_of("spawn", "queue"), "spawn"),
        queue_timeout=t.get("queue_timeout", duration, 5.0),
        surplus=t.get("surplus", one_of("destroy", "keep"), "destroy"),
        idle_timeout=t.get("idle_timeout", duration, 30.0),
        stateful=t.get("stateful", boolean, False),
    )
    if pool.min > pool.max:
        t.issues.add(t.key("min"), f"min ({pool.min}) is larger than max ({pool.max})")
    t.done()
    return pool


def _read_placement(t: Table) -> PlacementConfig:
    placement = PlacementConfig(
        cpus=t.get("cpus", _cpu_list, None),
        anti_affinity=t.get("anti_affinity", one_of("none", "preferred", "required"), "preferred"),
        near=tuple(t.get("near", list_of(string), ())),
    )
    t.done()
    return placement


def _cpu_list(value: Any) -> tuple[int, ...]:
    cpus = tuple(list_of(integer(0, 4095))(value))
    if not cpus:
        raise Invalid("expected at least one CPU")
    return cpus


def _read_score_weights(t: Table) -> tuple[tuple[str, int], ...]:
    """[placement]: a weight (0 turns a plugin off) for any of the scheduler's score plugins."""
    from ukproxy.vm.scheduler import ScoreWeights

    out = []
    for name, _default in ScoreWeights().plugins_with_names():
        if t.has(name):
            out.append((name, t.get(name, integer(0, 1000), 0)))
    t.done()
    return tuple(out)


def _read_health(t: Table) -> HealthConfig | None:
    kind = t.get("type", one_of("tcp", "http", "none"), "tcp")
    health = HealthConfig(
        type=kind if kind != "none" else "tcp",
        interval=t.get("interval", duration, 2.0),
        timeout=t.get("timeout", duration, 1.0),
        path=t.get("path", string, "/health"),
        fails=t.get("fails", integer(1, 100), 2),
        passes=t.get("passes", integer(1, 100), 1),
    )
    t.done()
    return None if kind == "none" else health


def _read_route(t: Table) -> RouteConfig:
    route = RouteConfig(
        upstream=t.get("upstream", string, ""),
        host=t.get("host", string, "*").lower(),
        prefix=t.get("prefix", string, "/"),
        strip_prefix=t.get("strip_prefix", boolean, False),
        guard=read_guard(t),
        compress=read_compress_keys(t),
        rules=edge_config.read_route_rules(t),
    )
    if not route.prefix.startswith("/"):
        t.issues.add(t.key("prefix"), f"must start with '/', got {route.prefix!r}")
    t.done()
    return route


def _read_http(t: Table) -> HttpConfig:
    http = HttpConfig(
        keepalive_timeout=t.get("keepalive_timeout", duration, 75.0),
        keepalive_requests=t.get("keepalive_requests", integer(1), 1000),
        client_header_timeout=t.get("client_header_timeout", duration, 60.0),
        client_body_timeout=t.get("client_body_timeout", duration, 60.0),
        client_max_body_size=t.get("client_max_body_size", size, 1024 * 1024),
        max_header_size=t.get("max_header_size", size, 8192),
        max_headers=t.get("max_headers", integer(1, 10_000), 100),
        max_uri_size=t.get("max_uri_size", size, 8192),
        compress=read_compress_keys(t),
        http2_max_concurrent_streams=t.get("http2_max_concurrent_streams", integer(1, 65536), 128),
        http2_max_header_list_size=t.get("http2_max_header_list_size", size, 16384),
        http2_body_preread_size=t.get("http2_body_preread_size", size, 65536),
        http2_max_resets=t.get("http2_max_resets", integer(1), 200),
        http2_max_control_frames=t.get("http2_max_control_frames", integer(1), 500),
        http2_flood_window=t.get("http2_flood_window", duration, 10.0),
    )
    if not 1024 <= http.http2_max_header_list_size <= 1 << 24:
        t.issues.add(t.key("http2_max_header_list_size"), "must be between 1k and 16m")
    if not 0 < http.http2_body_preread_size < 1 << 31:
        t.issues.add(t.key("http2_body_preread_size"), "must be between 1 and 2147483647 bytes")
    if http.http2_flood_window <= 0:
        t.issues.add(t.key("http2_flood_window"), "must be more than 0")
    t.done()
    return http


def _read_log(t: Table) -> LogConfig:
    log = LogConfig(
        error_log=t.get("error_log", string, "stderr"),
        level=t.get("level", one_of("debug", "info", "warning", "error"), "info"),
        access_log=t.get("access_log", string, "off"),
        access_format=t.get("access_format", one_of("combined", "json"), "combined"),
    )
    t.done()
    return log


def _read_metrics(t: Table) -> MetricsConfig:
    enabled = t.get("enabled", boolean, True)
    host, port = t.get("listen", host_port, ("127.0.0.1", 9145))
    t.done()
    return MetricsConfig(enabled=enabled, host=host, port=port)


def _read_network(t: Table) -> NetworkConfig:
    net = NetworkConfig(
        netns=t.get("netns", string, "ukproxy"),
        bridge=t.get("bridge", string, "ukbr0"),
        subnet=t.get("subnet", network, ipaddress.IPv4Network("10.77.0.0/24")),
        mode=t.get("mode", one_of("auto", "bridge", "user"), "auto"),
    )
    if len(net.bridge) > 15:
        t.issues.add(t.key("bridge"), f"interface names are at most 15 characters, got {len(net.bridge)}")
    t.done()
    return net


_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,63}")


def _endpoint(value: Any) -> str:
    text = string(value)
    if not re.fullmatch(r"https?://[^/\s]+", text):
        raise Invalid(f'expected an etcd client URL such as "http://127.0.0.1:2379", got {value!r}')
    return text


def _read_cluster(t: Table) -> ClusterConfig:
    cluster = ClusterConfig(
        endpoints=tuple(t.get("endpoints", list_of(_endpoint), ())),
        name=t.get("name", string, "ukproxy"),
        node_id=t.get("node_id", string, socket.gethostname()),
        peer=t.get("peer", string, ""),
        lease_ttl=t.get("lease_ttl", integer(2, 3600), 10),
        spill=t.get("spill", boolean, True),
    )
    if not cluster.endpoints and not t.has("endpoints"):
        t.issues.add(t.key("endpoints"), "at least one etcd endpoint is needed")
    for key, value in (("name", cluster.name), ("node_id", cluster.node_id)):
        if not _CLUSTER_NAME.fullmatch(value):
            t.issues.add(t.key(key), f"1-63 letters, digits, '_', '.' or '-', got {value!r}")
    if cluster.peer:
        try:
            host_port(cluster.peer)
        except Invalid as e:
            t.issues.add(t.key("peer"), str(e))
    t.done()
    return cluster


def _check_references(config: Config, top: Table) -> None:
    """Cross-references: names exist, are unique, and listeners don't collide."""
    issues = top.issues
    names: dict[str, int] = {}
    for i, u in enumerate(config.upstreams):
        if u.name in names:
            issues.add(f"upstream[{i}].name", f"duplicate upstream name {u.name!r} (also upstream[{names[u.name]}])")
        names.setdefault(u.name, i)
    addresses: dict[tuple[str, int], int] = {}
    for i, listen in enumerate(config.listen):
        if listen.upstream is not None and listen.upstream not in names:
            issues.add(f"listen[{i}].upstream", f"no upstream named {listen.upstream!r}")
        if listen.protocol == "http" and listen.upstream is None and not config.routes:
            issues.add(f"listen[{i}]", "an http listener needs an upstream or [[route]] entries")
        key = (listen.host, listen.port)
        if key in addresses and listen.port:
            issues.add(f"listen[{i}].address", f"{listen.address} is already used by listen[{addresses[key]}]")
        addresses.setdefault(key, i)
    for i, route in enumerate(config.routes):
        if route.upstream and route.upstream not in names:
            issues.add(f"route[{i}].upstream", f"no upstream named {route.upstream!r}")
    if not config.listen:
        issues.add("listen", "at least one [[listen]] is needed")
    listed = top.data.get("cpu_affinity")
    if isinstance(listed, list) and config.cpu_affinity is not None and len(config.cpu_affinity) < config.workers:
        issues.add("cpu_affinity", f"lists {len(config.cpu_affinity)} CPUs for {config.workers} workers")


def qemu_user(config: Config) -> str | None:
    """The user QEMU runs as: the workers' (nobody by default) when ukproxy runs as root on a bridge,
    else ukproxy's own (None)."""
    from ukproxy.privileges import DEFAULT_USER

    if os.geteuid() != 0 or config.network.mode == "user":
        return None
    return config.user or DEFAULT_USER


def _check_shares(config: Config, top: Table) -> None:
    """QEMU opens a share's files as the workers' user: say so now if that user cannot."""
    user = qemu_user(config)
    for i, u in enumerate(config.upstreams):
        if u.vm is not None and u.vm.share is not None:
            problem = access_problem(u.vm.share, user, u.vm.share_writable)
            if problem is not None:
                top.issues.add(f"upstream[{i}].vm.share", problem)


def is_service_address(config: Config, host: str) -> bool:
    """Whether a listener's address lies in the backend network: bound inside its namespace, for VMs."""
    try:
        return ipaddress.ip_address(host) in config.network.subnet
    except ValueError:
        return False


def _check_service_addresses(config: Config, top: Table) -> None:
    """Service addresses are listeners on the backend network's gateway, which VMs route to; only a
    bridge (root) has that network."""
    issues = top.issues
    gateway = next(config.network.subnet.hosts())
    bridge = config.network.mode == "bridge" or (config.network.mode == "auto" and os.geteuid() == 0)
    service_listeners = set()
    for i, listen in enumerate(config.listen):
        if not is_service_address(config, listen.host):
            continue
        service_listeners.add(listen.address)
        if not bridge:
            issues.add(f"listen[{i}].address", f"{listen.address} is a service address in the backend network "
                       f"{config.network.subnet}, which only exists with network.mode = \"bridge\" (as root); "
                       "QEMU user networking has no backend network")
        elif ipaddress.ip_address(listen.host) != gateway:
            issues.add(f"listen[{i}].address", f"a service address must be on the backend network's gateway "
                       f"{gateway} (the only address ukproxy holds there), got {listen.address}")
    for i, u in enumerate(config.upstreams):
        for name, address in u.vm.services if u.vm is not None else ():
            key = f"upstream[{i}].vm.services.{name}"
            host = address.rsplit(":", 1)[0]
            if not is_service_address(config, host):
                issues.add(key, f"{address} is outside the backend subnet {config.network.subnet}: a VM reaches "
                           f"its services only through service addresses (listeners on {gateway})")
            elif address not in service_listeners:
                issues.add(key, f"no [[listen]] has the address {address}")


def _check_stateful(config: Config, top: Table) -> None:
    """A stateful VM owns its share: two VMs (two in one pool, or one per worker) would write one log."""
    for i, u in enumerate(config.upstreams):
        if u.vm is None or not u.pool.stateful:
            continue
        if u.pool.max != 1:
            top.issues.add(f"upstream[{i}].pool.max", f"a stateful pool holds one VM (its share is its state), "
                           f"got max = {u.pool.max}")
        if config.workers != 1:
            top.issues.add(f"upstream[{i}].pool.stateful", f"every worker has its own pools, so {config.workers} "
                           "workers would boot one stateful VM each over the same share: use workers = 1")


def _check_placement(config: Config, top: Table) -> None:
    """Placement rules that can never be met are refused now, not at the first boot."""
    cpus = usable_cpus()
    vm_upstreams = {u.name for u in config.upstreams if u.vm is not None}
    for i, u in enumerate(config.upstreams):
        p = u.placement
        if u.vm is None:
            if p != PlacementConfig():
                top.issues.add(f"upstream[{i}].placement", "placement is for VM pools (a [vm] section)")
            continue
        allowed = cpus
        if p.cpus is not None:
            unusable = sorted(set(p.cpus) - set(cpus))
            if unusable:
                top.issues.add(f"upstream[{i}].placement.cpus", f"CPUs {unusable} are not usable here (usable: {cpus})")
            allowed = sorted(set(p.cpus) & set(cpus))
        most = u.pool.max * config.workers  # every worker has a pool
        if p.anti_affinity == "required" and most > len(allowed):
            top.issues.add(f"upstream[{i}].placement.anti_affinity",
                           f"required anti-affinity puts at most one VM of {u.name!r} on a CPU, but its pools may "
                           f"hold {most} VMs (pool.max {u.pool.max} x {config.workers} workers) on "
                           f"{len(allowed)} CPUs {allowed}")
        if most > len(allowed) * u.vm.max_per_cpu:
            top.issues.add(f"upstream[{i}].placement.cpus",
                           f"{most} VMs (pool.max {u.pool.max} x {config.workers} workers) cannot fit on "
                           f"{len(allowed)} CPUs of max_per_cpu {u.vm.max_per_cpu}")
        for name in p.near:
            if name == u.name:
                top.issues.add(f"upstream[{i}].placement.near", "an upstream is not near itself: see anti_affinity")
            elif name not in vm_upstreams:
                top.issues.add(f"upstream[{i}].placement.near", f"no VM upstream named {name!r}")
