"""The access log: a line per TCP session with its bytes, JSON lines as an option, reopened on SIGUSR1."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.observability.helpers import exchange, tcp_config, wait_until
from tests.running import RunningProxy, echo_servers, free_port

TCP_LINE = re.compile(
    r'^(?P<client>\S+) - - \[(?P<time>[^\]]+)\] "TCP (?P<listener>\S+)" (?P<status>\d{3}) (?P<sent>\d+) "-" "-" '
    r'upstream="(?P<upstream>[^"]*)" upstream_connect_time=(?P<connect>[\d.]+|-) '
    r"session_time=(?P<session>[\d.]+) bytes_received=(?P<received>\d+)$"
)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def parse(line: str, fmt: str) -> dict[str, object]:
    if fmt == "json":
        record = json.loads(line)
        return {"client": record["remote_addr"], "listener": record["listener"], "status": record["status"],
                "sent": record["bytes_sent"], "received": record["bytes_received"],
                "upstream": record["upstream_addr"]}
    m = TCP_LINE.match(line)
    assert m, f"not a tcp access log line: {line!r}"
    return {"client": m["client"], "listener": m["listener"], "status": int(m["status"]), "sent": int(m["sent"]),
            "received": int(m["received"]), "upstream": m["upstream"]}


@pytest.mark.parametrize("fmt", ["combined", "json"])
def test_one_line_per_tcp_session_with_its_bytes(ukproxy: Callable[..., RunningProxy], tmp_path: Path,
                                                   fmt: str) -> None:
    port, mport = free_port(), free_port()
    access = tmp_path / "logs" / "access.log"  # the directory is made by ukproxy
    with echo_servers(2) as backends:
        ukproxy(tcp_config(port, mport, [b.port for b in backends], extra="reuseport = true",
                           log=f'access_log = "{access}"\naccess_format = "{fmt}"')).start([port, mport], 2)
        sizes = [10 + 101 * i for i in range(25)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda n: exchange(port, b"a" * n), sizes))
        assert [len(a) for a in answers] == sizes
        written = wait_until(lambda: lines(access), "a line per session", accept=lambda ls: len(ls) >= len(sizes))
        records = [parse(line, fmt) for line in written]
        assert len(records) == len(sizes)
        assert sorted(r["sent"] for r in records) == sizes
        assert sorted(r["received"] for r in records) == sizes
        assert {r["status"] for r in records} == {200}
        assert {r["client"] for r in records} == {"127.0.0.1"}
        assert {r["listener"] for r in records} == {f"127.0.0.1:{port}"}
        assert {r["upstream"] for r in records} <= {f"127.0.0.1:{b.port}" for b in backends}


def test_sigusr1_reopens_moved_logs(ukproxy: Callable[..., RunningProxy], log_dir: Path) -> None:
    port, dead_port, mport = free_port(), free_port(), free_port()
    access, errors = log_dir / "access.log", log_dir / "error.log"
    with echo_servers(1) as backends:
        config = tcp_config(port, mport, [backends[0].port], extra="reuseport = true",
                            log=f'access_log = "{access}"\nerror_log = "{errors}"')
        # A second listener whose upstream is down: each connection writes error-log lines on demand.
        config += f"""
[[listen]]
address = "127.0.0.1:{dead_port}"
upstream = "down"
[[upstream]]
name = "down"
servers = ["127.0.0.1:{free_port()}"]
tries = 1
"""
        proxy = ukproxy(config).start([port, dead_port, mport], expect_workers=2)
        workers = {w.pid for w in proxy.workers()}
        for _ in range(3):
            exchange(port, b"before")
        wait_until(lambda: lines(access), "3 lines before the move", accept=lambda ls: len(ls) == 3)

        access.rename(log_dir / "access.log.1")
        errors.rename(log_dir / "error.log.1")
        proxy.signal(signal.SIGUSR1)  # what `ukproxy reopen` and logrotate's postrotate do
        wait_until(lambda: errors.read_text() if errors.exists() else "", "both workers reopened their logs",
                   accept=lambda text: text.count("logs reopened") == 2)
        assert access.exists()  # made again by the workers, empty until new traffic

        sessions = 20  # over both workers' reuseport sockets
        for _ in range(sessions):
            exchange(port, b"after")
        exchange(dead_port, b"nobody home")
        wait_until(lambda: lines(access), "the new lines in the new file", accept=lambda ls: len(ls) == sessions + 1)
        assert len(lines(log_dir / "access.log.1")) == 3  # nothing more went to the moved file
        wait_until(errors.read_text, "new errors in the new file",
                   accept=lambda text: "no server could be reached" in text)
        assert "no server could be reached" not in (log_dir / "error.log.1").read_text()
        assert {w.pid for w in proxy.workers()} == workers  # SIGUSR1 killed no one
