"""A host folder given to a pool's VMs over virtio-9p ([upstream.vm] share), served by the static service."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fleet.conftest import qemu_of
from tests.fleet.test_fleet import get
from tests.running import RunningProxy, free_port
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.qemu]


def share_config(port: int, netns: str, image: Path, share: Path, tag: str = "") -> str:
    return f"""
workers = 1
[network]
netns = "{netns}"
[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
upstream = "site"
[[upstream]]
name = "site"
[upstream.vm]
image = "{image}"
args = "service=static"
accel = "tcg"
boot_timeout = "20s"
share = "{share}"
{tag}
[upstream.pool]
min = 1
max = 1
"""


@pytest.mark.parametrize("tag", ["", 'share_tag = "site"'])
def test_a_pool_serves_its_share_as_the_workers_user(
    tag: str, tmp_path: Path, netns_name: str, static_image: Path, ukproxy: Callable[..., RunningProxy]
) -> None:
    site = tmp_path / "site"  # under a folder only root may enter: QEMU opens the share before it drops to nobody
    site.mkdir(mode=0o755)
    (site / "index.html").write_text("<p>first</p>\n")
    port = free_port()
    proxy = ukproxy(share_config(port, netns_name, static_image, site, tag)).start([port])
    answer = wait_until(lambda: get(port), "the share's index.html through ukproxy",
                        accept=lambda r: r[0] == 200, timeout=60, context=proxy.log)
    assert answer[1] == b"<p>first</p>\n"
    qemu = qemu_of(netns_name)[0].cmdline()
    assert f"local,id=share0,path={site},security_model=none,readonly=on" in qemu
    assert ("share_tag=site" in qemu[qemu.index("-append") + 1]) == bool(tag)
    (site / "index.html").write_text("<p>second</p>\n")  # changed on the host: served changed, no restart
    wait_until(lambda: get(port), "the edited file", accept=lambda r: r == (200, b"<p>second</p>\n"),
               timeout=10, context=proxy.log)
