"""Fixtures of the unikernel tests: httpd's image built once per session, and one namespace lab per
module (a module that needs other images overrides `image`; the lab builds whatever `image` names)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.unikernel_harness import Lab, is_root
from tests.unikernel.lab import built


@pytest.fixture(scope="session")
def image() -> Path:
    """httpd's image, with echo's built beside it."""
    return built("httpd", "echo")


@pytest.fixture(scope="module")
def lab(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A namespace with a bridge for this module's VMs; every VM and the namespace are gone afterwards."""
    if not is_root():
        pytest.skip("needs root: network namespaces, bridges and TAPs")
    lab = Lab(tmp_path_factory.mktemp("lab"))
    try:
        yield lab
    finally:
        lab.close()
