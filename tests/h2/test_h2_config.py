"""`ukproxy check` on the HTTP/2 keys: each refusal names the key and why."""

from __future__ import annotations

import pytest

from ukproxy.config import ConfigError, loads


def test_http2_keys_are_checked() -> None:
    with pytest.raises(ConfigError) as refused:
        loads("""
[[listen]]
address = "127.0.0.1:19999"
protocol = "tcp"
upstream = "a"
http2 = true
[http]
http2_max_header_list_size = "100"
http2_flood_window = "0s"
http2_max_concurrent_streams = 0
[[upstream]]
name = "a"
servers = ["127.0.0.1:1"]
""", "h2.toml")
    found = {(issue.key, issue.reason) for issue in refused.value.issues}
    assert ("listen[0].http2", 'HTTP/2 needs protocol = "http"') in found
    assert ("http.http2_max_header_list_size", "must be between 1k and 16m") in found
    assert ("http.http2_flood_window", "must be more than 0") in found
    assert any(key == "http.http2_max_concurrent_streams" for key, _ in found)
    assert {issue.file for issue in refused.value.issues} == {"h2.toml"}
