"""The two set-ups the scenarios run against, each started once per bench run.

native: nginx `return 200` on loopback as the backend; ukproxy (tcp + http listeners), nginx (stream +
        http keepalive) and, if installed, HAProxy in front of it; every client in the host namespace.
vm:     ukproxy boots a fixed pool (one VM per worker) in its own namespace `ukb-<hex>`; ukproxy is
        measured from the host namespace on 127.0.0.1. nginx runs INSIDE that namespace on its loopback
        and proxies to the same VMs, and the clients for nginx and for going direct run inside the
        namespace too (nothing in the host namespace may route to the VMs), so client placement differs.
"""

from __future__ import annotations

from bench import haproxy, nginx
from bench.procs import Processes, free_port, on_free_ports
from bench.scenarios import Scenario
from bench.settings import Settings
from bench.tools import have
from bench.ukproxy_run import Ukproxy, config_text

NATIVE_PATH = "/"
VM_PATH = "/health"
IN_NS = "backend namespace, its 127.0.0.1 / VM addresses"


def native(procs: Processes, st: Settings, with_ukproxy: bool = True) -> list[Scenario]:
    backend = free_port()
    nginx.start(procs, "backend-nginx", nginx.backend_conf(procs.raw_dir / "backend-nginx", st.workers, backend),
                [backend])
    server = f"127.0.0.1:{backend}"
    url = "http://127.0.0.1:{}" + NATIVE_PATH
    out = [Scenario("direct", "native", "direct", "none", [url.format(backend)])]
    if with_ukproxy:
        def start_ukproxy(ports: list[int]) -> tuple[Ukproxy, int, int]:
            tcp, http, metrics = ports
            return Ukproxy(procs, "ukproxy-native", config_text(
                workers=st.workers, metrics_port=metrics, listeners=[(tcp, "tcp"), (http, "http")],
                upstream=f'servers = ["{server}"]'), metrics).start(ports), tcp, http

        uk, tcp, http = on_free_ports(3, start_ukproxy)
        root = uk.proc.pid if uk.proc else None
        out += [Scenario("ukproxy tcp", "native", "ukproxy", "l4", [url.format(tcp)], worker_pids=uk.worker_pids,
                         cpu_root=root),
                Scenario("ukproxy http", "native", "ukproxy", "l7", [url.format(http)], worker_pids=uk.worker_pids,
                         cpu_root=root)]
    stream, http = free_port(), free_port()
    ngx = nginx.start(procs, "proxy-nginx", nginx.proxy_conf(procs.raw_dir / "proxy-nginx", st.workers, [server],
                                                             stream, http), [stream, http])
    out += [Scenario("nginx stream", "native", "nginx", "l4", [url.format(stream)], cpu_root=ngx.pid),
            Scenario("nginx http", "native", "nginx", "l7", [url.format(http)], cpu_root=ngx.pid)]
    if have("haproxy"):
        tcp, http = free_port(), free_port()
        hap = haproxy.start(procs, st.workers, [server], tcp, http)
        out += [Scenario("haproxy tcp", "native", "haproxy", "l4", [url.format(tcp)], cpu_root=hap.pid),
                Scenario("haproxy http", "native", "haproxy", "l7", [url.format(http)], cpu_root=hap.pid)]
    return out


def vm(procs: Processes, st: Settings) -> list[Scenario]:
    ns = procs.new_netns_name()

    def start_ukproxy(ports: list[int]) -> tuple[Ukproxy, int, int]:
        tcp, http, metrics = ports
        return Ukproxy(procs, "ukproxy-vm", config_text(
            workers=st.workers, metrics_port=metrics, listeners=[(tcp, "tcp"), (http, "http")], upstream="vm",
            netns=ns), metrics).start(ports), tcp, http

    uk, tcp, http = on_free_ports(3, start_ukproxy)
    uk.wait_log(r"VM \S+ in rotation", st.workers, timeout=90)
    vms = uk.vms_up()
    servers = [f"{v.host}:{v.port}" for v in vms]
    prefix = ["ip", "netns", "exec", ns]
    stream_port, http_port = 8081, 8082  # on the namespace's own loopback: nothing else listens there
    nginx.start(procs, "vm-nginx", nginx.proxy_conf(procs.raw_dir / "vm-nginx", st.workers, servers,
                                                    stream_port, http_port), [], netns=ns)
    _wait_bound_in(ns, [stream_port, http_port])
    url = "http://127.0.0.1:{}" + VM_PATH
    return [
        Scenario("direct", "vm", "direct", "none", [f"http://{s}{VM_PATH}" for s in servers], prefix, IN_NS),
        Scenario("ukproxy tcp", "vm", "ukproxy", "l4", [url.format(tcp)], worker_pids=uk.worker_pids),
        Scenario("ukproxy http", "vm", "ukproxy", "l7", [url.format(http)], worker_pids=uk.worker_pids),
        Scenario("nginx stream", "vm", "nginx", "l4", [url.format(stream_port)], prefix, IN_NS),
        Scenario("nginx http", "vm", "nginx", "l7", [url.format(http_port)], prefix, IN_NS),
    ]


def _wait_bound_in(ns: str, ports: list[int], timeout: float = 20.0) -> None:
    import subprocess
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Hltn"], capture_output=True, text=True).stdout
        if all(f"127.0.0.1:{p} " in out for p in ports):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nginx in namespace {ns} did not listen on {ports} within {timeout}s")
