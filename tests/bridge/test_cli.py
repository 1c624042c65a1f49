import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.__main__ import main
from tests.bridge import iproute2
from tests.bridge.conftest import needs_root
from tests.bridge.forked import call_in_fork

pytestmark = [pytest.mark.root, needs_root]

REPO = Path(__file__).resolve().parents[2]


def bridge_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def main_as_nobody(argv: list[str]) -> tuple[int, str]:
    # Forked rather than exec'd: the interpreter lives under /root, which nobody cannot read.
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def test_up_status_down(netns_name: str) -> None:
    up = bridge_cli("up", "--netns", netns_name, "--subnet", "10.79.0.0/24")
    assert up.returncode == 0, up.stderr
    assert netns_name in iproute2.netns_names()
    assert iproute2.ipv4_addresses(netns_name, "ukbr0") == ["10.79.0.1/24"]
    assert "bridge ukbr0: up  10.79.0.1/24" in up.stdout

    subprocess.run(["ip", "-n", netns_name, "link", "del", "ukbr0"], check=True)
    status = bridge_cli("status", "--netns", netns_name, "--subnet", "10.79.0.0/24")
    assert status.returncode == 0
    assert "bridge ukbr0: MISSING" in status.stdout

    assert bridge_cli("up", "--netns", netns_name, "--subnet", "10.79.0.0/24").returncode == 0
    as_json = json.loads(bridge_cli("status", "--netns", netns_name, "--subnet", "10.79.0.0/24", "--json").stdout)
    assert as_json["bridge"]["gateway_ok"] is True
    assert as_json["gateway"] == "10.79.0.1/24"

    down = bridge_cli("down", "--netns", netns_name)
    assert down.returncode == 0
    assert netns_name not in iproute2.netns_names()
    assert "absent" in bridge_cli("status", "--netns", netns_name).stdout


def test_bad_subnet_is_one_line_and_exit_1(netns_name: str) -> None:
    result = bridge_cli("up", "--netns", netns_name, "--subnet", "10.77.0.0/33")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--subnet" in result.stderr
    assert netns_name not in iproute2.netns_names()


def test_not_root_is_one_line_and_exit_1() -> None:
    code, stderr = call_in_fork(main_as_nobody, ["status"])
    assert code == 1
    assert stderr.strip().splitlines() == [
        "python -m bridge: must run as root (network namespaces and TAPs need CAP_NET_ADMIN)"
    ]
