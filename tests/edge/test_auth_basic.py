"""Basic auth (edge/basic_auth.py) from htpasswd files made by the real `htpasswd` (apache2-utils): bcrypt
(-B) and apr1 (-m) users through a real two-worker ukproxy with curl, the 401 challenge, a route that turns
auth off, a changed file picked up without a reload; and our apr1 against htpasswd's own hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.edge.guard_proxy import Guarded, curl, htpasswd
from tests.proxy.backends import Backend
from tests.waiting import wait_until
from ukproxy.edge.apr1 import apr1_verify
from ukproxy.edge.basic_auth import read_htpasswd, verify


@pytest.fixture
def backend(guard_backend: Backend) -> Backend:
    return guard_backend


@pytest.fixture
def users(guard_users: Path) -> Path:
    return guard_users


def test_bcrypt_and_apr1_users_get_in_and_others_are_challenged(guarded: Guarded, backend: Backend) -> None:
    before = backend.total()
    assert curl(guarded.url("staff"), "-u", "alice:wonder land")[0] == 200
    assert curl(guarded.url("staff"), "-u", "alice:wonder land")[0] == 200  # remembered this time
    assert curl(guarded.url("staff"), "-u", "bob:b:u:i:l:d")[0] == 200
    assert backend.total() - before == 3
    status, out = curl(guarded.url("staff"))
    assert status == 401 and 'WWW-Authenticate: Basic realm="Staff only"' in out
    for wrong in ("alice:wonder", "bob:b:u:i:l", "carol:x", "alice"):
        assert curl(guarded.url("staff"), "-u", wrong)[0] == 401, wrong
    assert curl(guarded.url("staff"), "-H", "Authorization: Bearer abc")[0] == 401
    assert curl(guarded.url("staff"), "-H", "Authorization: Basic !!notbase64")[0] == 401
    assert backend.total() - before == 3  # none of those reached the upstream
    assert curl(guarded.url("staff", "/free/page"))[0] == 200  # auth_basic = "off" on that route


def test_a_changed_file_is_picked_up_without_a_reload(guarded: Guarded, users: Path) -> None:
    htpasswd(users, "-B", "alice", "new one")

    def new_in_old_out() -> list[int]:
        # Each curl is a new connection, which either worker may take: every one of them must have read the file.
        return [curl(guarded.url("staff"), "-u", f"alice:{password}")[0] for password in ("new one", "wonder land") * 3]

    wait_until(new_in_old_out, "the new password taken and the old one (remembered before) refused",
               accept=lambda statuses: statuses == [200, 401] * 3, timeout=15)


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
