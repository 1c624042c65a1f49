"""What `ukproxy check` says about service addresses and stateful pools (conf/shortener.toml's keys)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.running import REPO
from ukproxy.config import ConfigError, is_service_address, loads

SHORTENER = REPO / "conf" / "shortener.toml"


def base(tmp: Path, *, mode: str = "bridge", kv_listen: str = "10.77.0.1:6379", services: str = "",
         pool: str = "min = 1\nmax = 1\n", workers: int = 1) -> str:
    data = tmp / "kv"
    data.mkdir(exist_ok=True)
    data.chmod(0o777)  # QEMU runs as nobody: check asks that nobody may write the share
    tmp.chmod(0o755)
    return f"""
workers = {workers}
[network]
mode = "{mode}"
[[listen]]
address = "127.0.0.1:18080"
protocol = "http"
upstream = "api"
[[listen]]
address = "{kv_listen}"
protocol = "tcp"
upstream = "kv"
[[upstream]]
name = "api"
[upstream.vm]
image = "unikernels/build/api.elf"
args = "service=api"
{services or 'services = { kv = "10.77.0.1:6379" }'}
[[upstream]]
name = "kv"
[upstream.vm]
image = "unikernels/build/kv.elf"
port = 6379
share = "{data}"
share_writable = true
[upstream.pool]
stateful = true
{pool}
"""


def errors_of(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        loads(text, "x.toml")
    return str(e.value)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="service addresses need root (a bridge)")


@needs_root
def test_services_become_kernel_arguments_and_the_gateway_listener_a_service_address(tmp_path: Path) -> None:
    config = loads(base(tmp_path), "x.toml")
    api = config.upstream("api").vm
    assert api is not None and api.kernel_args() == "service=api kv=10.77.0.1:6379"
    assert [is_service_address(config, lc.host) for lc in config.listen] == [False, True]
    assert config.upstream("kv").pool.stateful


@needs_root
def test_check_refuses_a_service_address_outside_the_backend_subnet(tmp_path: Path) -> None:
    text = base(tmp_path, services='services = { kv = "127.0.0.1:6379" }')
    assert ("x.toml: upstream[0].vm.services.kv: 127.0.0.1:6379 is outside the backend subnet 10.77.0.0/24"
            in errors_of(text))


@needs_root
def test_check_refuses_a_service_no_listener_has(tmp_path: Path) -> None:
    text = base(tmp_path, services='services = { kv = "10.77.0.1:7000" }')
    assert "upstream[0].vm.services.kv: no [[listen]] has the address 10.77.0.1:7000" in errors_of(text)


@needs_root
def test_check_refuses_a_service_address_off_the_gateway(tmp_path: Path) -> None:
    text = base(tmp_path, kv_listen="10.77.0.9:6379", services='services = { kv = "10.77.0.9:6379" }')
    assert "listen[1].address: a service address must be on the backend network's gateway 10.77.0.1" in errors_of(text)


def test_check_refuses_service_addresses_without_a_backend_network(tmp_path: Path) -> None:
    errors = errors_of(base(tmp_path, mode="user"))
    assert "listen[1].address: 10.77.0.1:6379 is a service address in the backend network 10.77.0.0/24" in errors
    assert "QEMU user networking has no backend network" in errors


def test_check_refuses_reserved_service_names(tmp_path: Path) -> None:
    assert "'port' cannot name a service" in errors_of(base(tmp_path, services='services = { port = "10.77.0.1:1" }'))


@needs_root
def test_check_refuses_a_stateful_pool_of_more_than_one_vm(tmp_path: Path) -> None:
    errors = errors_of(base(tmp_path, pool="min = 1\nmax = 2\n"))
    assert "upstream[1].pool.max: a stateful pool holds one VM (its share is its state), got max = 2" in errors
    errors = errors_of(base(tmp_path, workers=2))
    assert "upstream[1].pool.stateful: every worker has its own pools, so 2 workers would boot" in errors


@needs_root
def test_a_writable_share_alone_makes_no_stateful_pool(tmp_path: Path) -> None:
    config = loads(base(tmp_path, pool="max = 2\n").replace("stateful = true\n", ""), "x.toml")
    assert not config.upstream("kv").pool.stateful


@needs_root
def test_the_shipped_shortener_config_passes_check(tmp_path: Path) -> None:
    """conf/shortener.toml as shipped, with its kv share folder made as the README says."""
    text = SHORTENER.read_text().replace('"run/shortener-kv"', f'"{tmp_path}"')
    os.chmod(tmp_path, 0o777)
    path = tmp_path / "shortener.toml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "ukproxy", "check", "-c", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def placement_of(tmp: Path, rules: str, pool: str = "min = 1\nmax = 1\n") -> str:
    """base() with [upstream.placement] rules for api (a VM pool of max 1)."""
    return base(tmp, pool=pool).replace('[[upstream]]\nname = "kv"',
                                        f'[upstream.pool]\nmax = 1\n[upstream.placement]\n{rules}\n'
                                        '[[upstream]]\nname = "kv"')


@needs_root
def test_placement_rules_reach_the_config(tmp_path: Path) -> None:
    cpu = min(os.sched_getaffinity(0))
    text = placement_of(tmp_path, f'cpus = [{cpu}]\nanti_affinity = "required"\nnear = ["kv"]')
    config = loads(text + '[placement]\npreferred_affinity = 5\nlow_load = 0\n', "x.toml")
    p = config.upstream("api").placement
    assert (p.cpus, p.anti_affinity, p.near) == ((cpu,), "required", ("kv",))
    assert dict(config.score_weights) == {"low_load": 0, "preferred_affinity": 5}


@needs_root
def test_check_refuses_placement_that_can_never_be_met(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    errors = errors_of(placement_of(tmp_path, "cpus = [4000]"))
    assert f"upstream[0].placement.cpus: CPUs [4000] are not usable here (usable: {cpus})" in errors
    crowded = placement_of(tmp_path, f'cpus = [{cpus[0]}]\nanti_affinity = "required"').replace(
        "[upstream.pool]\nmax = 1\n[upstream.placement]", "[upstream.pool]\nmax = 2\n[upstream.placement]")
    assert ("upstream[0].placement.anti_affinity: required anti-affinity puts at most one VM of 'api' on a CPU, "
            "but its pools may hold 2 VMs (pool.max 2 x 1 workers) on 1 CPUs") in errors_of(crowded)
    assert "upstream[0].placement.near: no VM upstream named 'db'" in errors_of(placement_of(tmp_path, 'near = ["db"]'))
    assert "upstream[0].placement.near: an upstream is not near itself" in errors_of(
        placement_of(tmp_path, 'near = ["api"]'))
    assert "placement.unknown: unknown key" in errors_of(placement_of(tmp_path, "unknown = 1"))
    assert "placement.spread_upstream: must be" in errors_of(base(tmp_path) + "[placement]\nspread_upstream = -1\n")
