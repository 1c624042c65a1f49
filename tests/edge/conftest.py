"""tests/edge: the limit, access and auth tests share one two-worker ukproxy (tests/edge/guard_proxy.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.guard_proxy import SITE, Guarded, htpasswd, start_guarded
from tests.proxy.backends import Backend


@pytest.fixture(scope="package")
def guard_backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.close()


@pytest.fixture(scope="package")
def guard_users() -> Iterator[Path]:
    # Workers run as nobody and read the file again when it changes: a folder they can enter (pytest's are 0700).
    folder = Path(tempfile.mkdtemp(prefix="ukproxy-htpasswd-"))
    folder.chmod(0o755)
    path = folder / "htpasswd"
    htpasswd(path, "-B", "alice", "wonder land")  # bcrypt
    htpasswd(path, "-m", "bob", "b:u:i:l:d")  # apr1; a password may hold colons
    path.chmod(0o644)
    yield path
    shutil.rmtree(folder)


@pytest.fixture(scope="package")
def guarded(tmp_path_factory: pytest.TempPathFactory, guard_backend: Backend, guard_users: Path) -> Iterator[Guarded]:
    g = start_guarded(tmp_path_factory.mktemp("guarded"), SITE, backend=guard_backend.address,
                      htpasswd=str(guard_users))
    yield g
    g.stop()
