"""Config loading: every class of error names the file, the key path and the reason."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.running import REPO, ukproxy_check
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
    return ukproxy_check(path)


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


VM_POOL = """
[[listen]]
address = "127.0.0.1:8080"
upstream = "web"
[[upstream]]
name = "web"
[upstream.vm]
image = "x.elf"
"""


def test_share_is_an_absolute_folder_read_only_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "site").mkdir()
    monkeypatch.chdir(tmp_path)
    vm = loads(VM_POOL + 'share = "site"\n', "x.toml").upstream("web").vm
    assert vm is not None and (vm.share, vm.share_writable, vm.share_tag) == (str(tmp_path / "site"), False, "share")
    (tmp_path / "data").mkdir()
    (tmp_path / "data").chmod(0o777)  # writable by whoever QEMU runs as
    vm = loads(VM_POOL + 'share = "data"\nshare_writable = true\nshare_tag = "data"\n', "x.toml").upstream("web").vm
    assert vm is not None and (vm.share, vm.share_writable, vm.share_tag) == (str(tmp_path / "data"), True, "data")
    assert loads(VM_POOL, "x.toml").upstream("web").vm.share is None  # type: ignore[union-attr]


def test_share_errors_name_the_folder_and_key(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert f"x.toml: upstream[0].vm.share: no folder {tmp_path / 'absent'}" in errors_of(
        VM_POOL + f'share = "{tmp_path / "absent"}"\n')
    assert f"x.toml: upstream[0].vm.share: {tmp_path / 'file'} is not a folder" in errors_of(
        VM_POOL + f'share = "{tmp_path / "file"}"\n')
    assert "x.toml: upstream[0].vm.share_tag: a mount tag is 1-31 letters, digits, '_', '.' or '-', got 'a b'" in (
        errors_of(VM_POOL + f'share = "{tmp_path / "absent"}"\nshare_tag = "a b"\n'))
    assert "x.toml: upstream[0].vm.share: share_writable and share_tag need a share folder" in errors_of(
        VM_POOL + "share_writable = true\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: QEMU runs as the workers' user only under root")
@pytest.mark.parametrize(("writable", "mode", "wanted"), [
    (False, 0o700, "read"), (True, 0o755, "read and write"),
])
def test_check_says_when_the_workers_user_cannot_use_the_share(
    tmp_path: Path, writable: bool, mode: int, wanted: str
) -> None:
    folder = tmp_path / "private"
    folder.mkdir()
    os.chown(folder, 0, 0)
    folder.chmod(mode)
    path = tmp_path / "share.toml"
    path.write_text(VM_POOL + f'share = "{folder}"\nshare_writable = {str(writable).lower()}\n')
    result = run_check(path)
    assert result.returncode == 1
    assert (f"{path}: upstream[0].vm.share: QEMU runs as user 'nobody', who cannot {wanted} {folder}"
            in result.stderr), result.stderr
    folder.chmod(0o777 if writable else 0o755)  # now the default user (nobody) may
    assert run_check(path).returncode == 0


def test_vm_pools_get_a_tcp_liveness_check_unless_turned_off() -> None:
    health = loads(VM_POOL, "x.toml").upstream("web").health
    assert health is not None and health.type == "tcp"
    assert loads(VM_POOL + '[upstream.health]\ntype = "none"\n', "x.toml").upstream("web").health is None
    http = loads(VM_POOL + '[upstream.health]\ntype = "http"\nfails = 3\n', "x.toml").upstream("web").health
    assert http is not None and (http.type, http.fails) == ("http", 3)
    assert loads(GOOD, "x.toml").upstream("web").health is None  # static servers: checks only when asked
    checked = loads(GOOD + '[upstream.health]\ntype = "http"\n', "x.toml").upstream("web").health
    assert checked is not None and checked.type == "http"


def test_a_vm_pool_behind_a_tcp_listener_defaults_to_what_a_vm_holds() -> None:
    def upstream(listen_protocol: str, pool: str = "") -> int:
        config = loads(f"""
[[listen]]
address = "127.0.0.1:9000"
protocol = "{listen_protocol}"
upstream = "u"
[[upstream]]
name = "u"
[upstream.vm]
image = "unikernels/build/httpd.elf"
[upstream.pool]
{pool}
""")
        return config.upstreams[0].pool.max_conns

    assert upstream("tcp") == 512          # a tcp client holds its VM connection for its whole life
    assert upstream("http") == 64          # requests in flight
    assert upstream("tcp", "max_conns = 8") == 8
