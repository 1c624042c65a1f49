"""Basic auth (edge/basic_auth.py) from htpasswd files made by the real `htpasswd` (apache2-utils): bcrypt
(-B) and apr1 (-m) users through a real two-worker ukproxy with curl, the 401 challenge, a route that turns
auth off, a changed file picked up without a reload; and our apr1 against htpasswd's own hashes."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.guard_proxy import Guarded, curl, start_guarded
from tests.proxy.backends import Backend
from tests.waiting import wait_until
from ukproxy.edge.apr1 import apr1_verify
from ukproxy.edge.basic_auth import read_htpasswd, verify

CONFIG = """
[[listen]]
address = "127.0.0.1:{port0}"
protocol = "http"
auth_basic = "Staff only"
auth_basic_user_file = "{htpasswd}"

[[route]]
prefix = "/"
upstream = "app"

[[route]]
prefix = "/public"
upstream = "app"
auth_basic = "off"

[[upstream]]
name = "app"
servers = ["{backend}"]
"""


def htpasswd(path: Path, flag: str, user: str, password: str) -> None:
    create = ["-c"] if not path.exists() else []
    subprocess.run(["htpasswd", *create, "-b", flag, str(path), user, password], check=True, capture_output=True)


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.close()


@pytest.fixture(scope="module")
def users() -> Iterator[Path]:
    # Workers run as nobody and read the file again when it changes: a folder they can enter (pytest's are 0700).
    folder = Path(tempfile.mkdtemp(prefix="ukproxy-htpasswd-"))
    folder.chmod(0o755)
    path = folder / "htpasswd"
    htpasswd(path, "-B", "alice", "wonder land")  # bcrypt
    htpasswd(path, "-m", "bob", "b:u:i:l:d")  # apr1; a password may hold colons
    path.chmod(0o644)
    yield path
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, backend: Backend, users: Path) -> Iterator[Guarded]:
    config = CONFIG.replace("{htpasswd}", str(users))
    g = start_guarded(tmp_path_factory.mktemp("auth"), config, backend.address, 1)
    yield g
    g.stop()


def test_bcrypt_and_apr1_users_get_in_and_others_are_challenged(guarded: Guarded, backend: Backend) -> None:
    before = backend.total()
    assert curl(guarded.url(0), "-u", "alice:wonder land")[0] == 200
    assert curl(guarded.url(0), "-u", "alice:wonder land")[0] == 200  # remembered this time
    assert curl(guarded.url(0), "-u", "bob:b:u:i:l:d")[0] == 200
    assert backend.total() - before == 3
    status, out = curl(guarded.url(0))
    assert status == 401 and 'WWW-Authenticate: Basic realm="Staff only"' in out
    for wrong in ("alice:wonder", "bob:b:u:i:l", "carol:x", "alice"):
        assert curl(guarded.url(0), "-u", wrong)[0] == 401, wrong
    assert curl(guarded.url(0), "-H", "Authorization: Bearer abc")[0] == 401
    assert curl(guarded.url(0), "-H", "Authorization: Basic !!notbase64")[0] == 401
    assert backend.total() - before == 3  # none of those reached the upstream
    assert curl(guarded.url(0, "/public/page"))[0] == 200  # auth_basic = "off" on that route


def test_a_changed_file_is_picked_up_without_a_reload(guarded: Guarded, users: Path) -> None:
    htpasswd(users, "-B", "alice", "new one")

    def new_in_old_out() -> list[int]:
        # Each curl is a new connection, which either worker may take: every one of them must have read the file.
        return [curl(guarded.url(0), "-u", f"alice:{password}")[0] for password in ("new one", "wonder land") * 6]

    wait_until(new_in_old_out, "the new password taken and the old one (remembered before) refused",
               accept=lambda statuses: statuses == [200, 401] * 6, timeout=10)


def test_our_apr1_and_bcrypt_check_what_htpasswd_wrote(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    passwords = ["", "x", "sixteen bytes!!!", "a much longer password than one MD5 block", "ünïcødé", "p" * 80]
    for i, password in enumerate(passwords):
        htpasswd(path, "-m", f"m{i}", password)
        htpasswd(path, "-B", f"b{i}", password)
    users = read_htpasswd(str(path))
    for i, password in enumerate(passwords):
        apr1, bcrypt = users[f"m{i}".encode()], users[f"b{i}".encode()]
        assert apr1.startswith(b"$apr1$") and bcrypt.startswith(b"$2y$")
        assert apr1_verify(password.encode(), apr1) and verify(password.encode(), bcrypt)
        assert not verify(password.encode() + b"?", apr1) and not verify(b"?" + password.encode(), bcrypt)
