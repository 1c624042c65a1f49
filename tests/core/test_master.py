"""The master and its workers as real processes: count, pinning, respawn, stops, reload, crash loops."""

from __future__ import annotations

import os
import re
import signal
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.core.test_tcp_proxy import exchange, tcp_config
from tests.running import RunningProxy, echo_servers, free_port
from tests.waiting import wait_until

CPUS = sorted(os.sched_getaffinity(0))


def test_worker_count_and_pinning(ukproxy: Callable[..., RunningProxy]) -> None:
    port = free_port()
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port], workers=len(CPUS) + 1)).start([port])
        workers = proxy.wait_workers(len(CPUS) + 1)
        pinned = sorted(tuple(w.cpu_affinity()) for w in workers)
        expected = sorted((CPUS[i % len(CPUS)],) for i in range(len(CPUS) + 1))
        assert pinned == expected  # worker i on CPU i, wrapping round
        assert psutil.Process(proxy.pid).cpu_affinity() == CPUS  # the master is not pinned


def test_cpu_affinity_off_leaves_workers_unpinned(ukproxy: Callable[..., RunningProxy]) -> None:
    port = free_port()
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port], extra='cpu_affinity = "off"')).start([port])
        assert all(w.cpu_affinity() == CPUS for w in proxy.wait_workers(2))


def test_killed_worker_is_replaced_and_logged(ukproxy: Callable[..., RunningProxy]) -> None:
    port = free_port()
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port])).start([port])
        first = proxy.wait_workers(2)
        victim = first[0]
        victim.kill()
        survivors = {w.pid for w in first[1:]}
        now = {w.pid for w in proxy.wait_workers(2, exclude={victim.pid})}
        assert victim.pid not in now and survivors <= now and len(now) == 2
        assert f"(pid {victim.pid}) died: killed by signal 9 (SIGKILL)" in proxy.log()
        assert exchange(port, b"still serving") == b"still serving"


def test_quit_lets_an_inflight_transfer_finish(ukproxy: Callable[..., RunningProxy]) -> None:
    port = free_port()
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port], extra='worker_shutdown_timeout = "20s"')).start(
            [port], expect_workers=2)
        workers = proxy.wait_ready(2)  # the first reply's timeout must not include the workers' imports
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"before quit;")
        assert s.recv(100) == b"before quit;"
        proxy.signal(signal.SIGQUIT)
        # Each worker stops accepting as it logs its graceful stop (the master's sockets accept no one).
        wait_until(lambda: set(re.findall(r"worker (\d+): graceful stop", proxy.log())), "both workers stopping",
                   accept=lambda stopping: stopping == {"0", "1"}, context=proxy.log)
        # New connections are no longer taken...
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2) as late:
            late.sendall(b"x")
            if late.recv(1) == b"":
                raise ConnectionResetError("closed")
        # ...but the open one still works, and the master waits for it.
        assert proxy.proc is not None and proxy.proc.poll() is None
        s.sendall(b"after quit")
        assert s.recv(100) == b"after quit"
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b""
        s.close()
        assert proxy.wait(15) == 0
        assert not any(w.is_running() for w in workers)


def test_term_stops_promptly_with_open_connections(ukproxy: Callable[..., RunningProxy]) -> None:
    port = free_port()
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port])).start([port], expect_workers=2)
        workers = proxy.wait_ready(2)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"hi")
        assert s.recv(10) == b"hi"
        proxy.signal(signal.SIGTERM)
        assert proxy.wait(10) == 0
        assert not any(w.is_running() for w in workers)
        assert s.recv(10) == b""  # the connection went with its worker
        s.close()
        assert not Path(proxy.pid_file).exists()


def test_cli_stop_and_reload_find_the_master(ukproxy: Callable[..., RunningProxy]) -> None:
    port = free_port()
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port])).start([port], expect_workers=2)
        old = {w.pid for w in proxy.workers()}
        result = proxy.cli("reload")
        assert result.returncode == 0, result.stderr
        proxy.wait_workers(2, exclude=old)  # a new generation of workers
        assert exchange(port, b"after reload") == b"after reload"
        # An invalid config is refused and the old one keeps serving.
        text = proxy.config_path.read_text()
        proxy.config_path.write_text(text.replace("workers = 2", "workers = -1"))
        result = proxy.cli("reload")
        assert result.returncode == 1 and "workers: must be at least 1" in result.stderr
        assert exchange(port, b"still up") == b"still up"
        # The master itself refuses it too when signalled directly.
        current = {w.pid for w in proxy.workers()}
        proxy.signal(signal.SIGHUP)
        wait_until(proxy.log, "the master to refuse the reload",
                   accept=lambda log: "reload refused, keeping the running config" in log)
        assert {w.pid for w in proxy.workers()} == current
        assert exchange(port, b"still up") == b"still up"
        result = proxy.cli("stop", "--wait")
        assert result.returncode == 0, result.stderr
        assert proxy.wait(10) == 0
    missing = proxy.cli("stop")
    assert missing.returncode == 1 and "no running master found" in missing.stderr


def test_second_master_with_the_same_pid_file_refuses(ukproxy: Callable[..., RunningProxy]) -> None:
    port, metrics_port = free_port(), free_port()
    with echo_servers(1) as (b,):
        metrics = f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"'
        proxy = ukproxy(tcp_config(port, [b.port], upstream_extra=metrics)).start([port], expect_workers=2)
        second = proxy.cli("run")
        assert second.returncode == 1 and "already running" in second.stderr
        # The refused master touched nothing of the running one's: its metrics still scrape.
        assert exchange(port, b"x") == b"x"

        def metrics() -> bytes:  # workers flush their tallies once a second
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
                return r.read()

        wait_until(metrics, "the session in the running master's /metrics",
                   accept=lambda page: b"ukproxy_connections_accepted_total" in page)


def test_crash_loop_at_startup_gives_up(ukproxy: Callable[..., RunningProxy], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A sitecustomize that kills any worker as it starts (workers alone have UKPROXY_CONTROL_FD).
    hook = tmp_path / "crashhook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\nif 'UKPROXY_CONTROL_FD' in os.environ:\n    os._exit(7)\n")
    monkeypatch.setenv("PYTHONPATH", f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    port = free_port()
    proxy = ukproxy(tcp_config(port, [free_port()])).start([port])
    assert proxy.wait(30) == 1
    log = proxy.log()
    assert "exited with code 7" in log and "crash at start-up" in log


@pytest.mark.parametrize(("setting", "user"), [("", "nobody"), ('user = "daemon"', "daemon")])
def test_workers_drop_to_the_configured_user(ukproxy: Callable[..., RunningProxy], setting: str, user: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("dropping privileges needs a root master")
    port = free_port()
    with echo_servers(1) as (b,):
        proxy = ukproxy(tcp_config(port, [b.port], extra=setting)).start([port], expect_workers=2)
        assert exchange(port, b"served unprivileged") == b"served unprivileged"
        import pwd

        uid = pwd.getpwnam(user).pw_uid
        wait_until(lambda: {w.pid: w.uids().effective for w in proxy.workers()},  # as each loop is about to start
                   f"every worker running as uid {uid}", accept=lambda uids: set(uids.values()) == {uid})
        for w in proxy.workers():
            assert w.uids().real == uid and w.uids().effective == uid and w.uids().saved == uid
            limits = Path(f"/proc/{w.pid}/limits").read_text()
            soft = int(next(line for line in limits.splitlines() if line.startswith("Max open files")).split()[3])
            assert soft >= 1024 + 128  # raised to fit worker_connections before the drop
        assert psutil.Process(proxy.pid).uids().effective == 0  # the master keeps root for the fleet


def test_unknown_user_is_refused_clearly(ukproxy: Callable[..., RunningProxy]) -> None:
    if os.geteuid() != 0:
        pytest.skip("privileges are only dropped by a root master")
    port = free_port()
    proxy = ukproxy(tcp_config(port, [free_port()], extra='user = "no-such-user-here"')).start()
    assert proxy.wait(20) == 1
    assert "user: no user named 'no-such-user-here'" in proxy.log()
