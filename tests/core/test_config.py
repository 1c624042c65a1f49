"""Config loading: every class of error names the file, the key path and the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.running import REPO
from ukproxy.config import ConfigError, load, loads

GOOD = """
workers = 2
worker_connections = 512
accept_mutex_delay = "200ms"
[[listen]]
address = "127.0.0.1:8080"
upstream = "web"
[[upstream]]
name = "web"
servers = ["127.0.0.1:9001", {address = "127.0.0.1:9002", weight = 3, backup = true}]
connect_timeout = "2s"
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads(text, "x.toml")
    return [str(i) for i in info.value.issues]


def test_good_config_is_typed_and_frozen() -> None:
    c = loads(GOOD, "x.toml")
    assert c.workers == 2 and c.worker_connections == 512
    assert c.accept_mutex_delay == pytest.approx(0.2)
    web = c.upstream("web")
    assert [(s.host, s.port, s.weight, s.backup) for s in web.servers] == [
        ("127.0.0.1", 9001, 1, False), ("127.0.0.1", 9002, 3, True)]
    assert web.connect_timeout == 2.0
    with pytest.raises(AttributeError):
        c.workers = 3  # type: ignore[misc]


@pytest.mark.parametrize(("lines", "mutex", "reuseport"), [
    ("", False, True),  # the default: a socket per worker, spread by the kernel
    ("accept_mutex = true", True, False),  # the mutex guards one shared socket
    ("accept_mutex = false\nreuseport = false", False, False),
    ("accept_mutex = true\nreuseport = true", True, True),  # as written (reuseport wins in the master)
])
def test_reuseport_is_on_unless_the_mutex_is(lines: str, mutex: bool, reuseport: bool) -> None:
    c = loads(lines + "\n" + GOOD, "x.toml")
    assert (c.accept_mutex, c.reuseport) == (mutex, reuseport)


def test_workers_auto_is_one_per_usable_cpu() -> None:
    c = loads(GOOD.replace("workers = 2", 'workers = "auto"'), "x.toml")
    assert c.workers == len(os.sched_getaffinity(0))
    assert c.cpu_affinity == tuple(sorted(os.sched_getaffinity(0)))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("workers = 2", "workers = 0"), "x.toml: workers: must be at least 1, got 0"),
        (("workers = 2", 'workers = "many"'), "x.toml: workers: expected an integer, got a string"),
        (("worker_connections = 512", "worker_connections = 512\nbogus = 1"), "x.toml: bogus: unknown key"),
        (('"200ms"', '"soon"'), 'x.toml: accept_mutex_delay: expected a duration like 5 or "500ms", got \'soon\''),
        (('"127.0.0.1:8080"', '"localhost:8080"'), "x.toml: listen[0].address: 'localhost' is not an IP address"),
        (('"127.0.0.1:8080"', '"127.0.0.1:99999"'), "x.toml: listen[0].address: port must be 1-65535, got '99999'"),
        (('upstream = "web"', 'upstream = "nope"'), "x.toml: listen[0].upstream: no upstream named 'nope'"),
        (('"127.0.0.1:9001"', '"127.0.0.1"'),
         "x.toml: upstream[0].servers[0]: expected \"host:port\", got '127.0.0.1'"),
        (("weight = 3", "weight = -1"), "x.toml: upstream[0].servers[1].weight: must be at least 1, got -1"),
        (("backup = true", "backup = true, colour = 1"), "x.toml: upstream[0].servers[1].colour: unknown key"),
        (('connect_timeout = "2s"', 'connect_timeout = "2s"\nbalance = "fastest"'),
         "x.toml: upstream[0].balance: must be one of 'round_robin', 'least_conn', 'least_time', 'random', "
         "'hash', 'ip_hash', got 'fastest'"),
        (('servers = ["127.0.0.1:9001", {address = "127.0.0.1:9002", weight = 3, backup = true}]', ""),
         "x.toml: upstream[0].servers: an upstream needs servers or a [vm] section"),
        (("accept_mutex_delay", "accept_mutex = 1\naccept_mutex_delay"),
         "x.toml: accept_mutex: expected true or false, got an integer"),
    ],
)
def test_each_error_names_file_key_and_reason(change: tuple[str, str], expected: str) -> None:
    assert change[0] in GOOD
    assert expected in errors_of(GOOD.replace(change[0], change[1], 1))


def test_every_error_is_reported_at_once() -> None:
    bad = GOOD.replace("workers = 2", "workers = 0").replace('upstream = "web"', 'upstream = "nope"')
    found = errors_of(bad + "\nstray = true\n")
    assert len(found) == 3


def test_duplicate_names_and_addresses() -> None:
    text = GOOD + '\n[[upstream]]\nname = "web"\nservers = ["127.0.0.1:1"]\n'
    text += '[[listen]]\naddress = "127.0.0.1:8080"\nupstream = "web"\n'
    found = errors_of(text)
    assert "x.toml: upstream[1].name: duplicate upstream name 'web' (also upstream[0])" in found
    assert "x.toml: listen[1].address: 127.0.0.1:8080 is already used by listen[0]" in found


def test_pool_min_above_max() -> None:
    text = GOOD.replace('servers = ["127.0.0.1:9001", {address = "127.0.0.1:9002", weight = 3, backup = true}]',
                        '[upstream.vm]\nimage = "x.elf"\n[upstream.pool]\nmin = 5\nmax = 2')
    assert "x.toml: upstream[0].pool.min: min (5) is larger than max (2)" in errors_of(text)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    assert errors_of("workers = ")[0].startswith("x.toml: not valid TOML")
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "absent.toml")
    assert "cannot read" in str(info.value) and "absent.toml" in str(info.value)


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ukproxy", "check", "-c", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=30)


def test_check_command_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    result = run_check(good)
    assert result.returncode == 0 and "test is successful" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("stray = 1\n" + GOOD.replace("workers = 2", "workers = 0"))
    result = run_check(bad)
    assert result.returncode == 1
    assert f"{bad}: workers: must be at least 1, got 0" in result.stderr
    assert f"{bad}: stray: unknown key" in result.stderr
    assert "test failed" in result.stderr


def test_default_config_is_valid() -> None:
    assert run_check(REPO / "conf" / "ukproxy.toml").returncode == 0
