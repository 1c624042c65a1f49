"""HTTP/2 over TLS: ALPN offers h2 then http/1.1, and the connection speaks what the client chose."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.h2.conftest import LIMITS
from tests.proxy.backends import Backend
from tests.running import RunningProxy, free_port
from tests.tls.certs import Authority
from tests.waiting import wait_until


def test_alpn_chooses_h2_or_http11(ukproxy: Callable[..., RunningProxy], tmp_path: Path) -> None:
    ca = Authority(tmp_path / "certs")
    leaf = ca.leaf("ec", ["localhost"])
    backend = Backend("tls-backend")
    try:
        port = free_port()
        access = tmp_path / "access.log"
        proxy = ukproxy(f"""
workers = 1
[metrics]
enabled = false
[log]
access_log = "{access}"
[http]
{LIMITS}
[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
upstream = "app"
http2 = true
ssl = true
ssl_certificate = "{leaf.cert}"
ssl_certificate_key = "{leaf.key}"
[[upstream]]
name = "app"
servers = ["{backend.address}"]
""")
        proxy.start(wait_ports=[port], expect_workers=1)
        url = f"https://localhost:{port}"
        curl = ["curl", "-sS", "--max-time", "20", "--cacert", str(ca.cert), "--resolve", f"localhost:{port}:127.0.0.1",
                "-w", "\n%{http_version}"]
        h2 = subprocess.run([*curl, "--http2", f"{url}/headers"], capture_output=True, text=True, timeout=30,
                            check=True).stdout.rsplit("\n", 1)
        assert h2[1] == "2"
        seen = dict(json.loads(h2[0])["headers"])
        assert seen["X-Forwarded-Proto"] == "https" and seen["Via"] == "2 ukproxy"
        h1 = subprocess.run([*curl, "--http1.1", f"{url}/one"], capture_output=True, text=True, timeout=30,
                            check=True).stdout
        assert h1 == "tls-backend GET /one\n1.1"
        load = subprocess.run(["h2load", "-n", "200", "-c", "2", "-m", "10", f"{url}/load"], capture_output=True,
                              text=True, timeout=60)
        assert "200 succeeded, 0 failed" in load.stdout, load.stdout + load.stderr
        assert "Application protocol: h2" in load.stdout
        logged = wait_until(lambda: [line for line in access.read_text().splitlines() if "/headers" in line]
                            if access.exists() else [], "the access log line of /headers")
        assert '"GET /headers HTTP/2.0" 200' in logged[0] and "tls=TLSv1.3" in logged[0], logged
    finally:
        backend.close()
