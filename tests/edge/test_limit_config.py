"""Bad limit, access and auth config is refused by `ukproxy check`, each problem with file, key and reason."""

from __future__ import annotations

from pathlib import Path

from tests.running import ukproxy_check

BAD = """
[[limit_req_zone]]
name = "perip"
rate = "10 per second"
size = "1k"

[[limit_req_zone]]
name = "norate"

[[limit_conn_zone]]
name = "perip"
key = "cookie:session"

[[limit_conn_zone]]
name = "conns"

[[listen]]
address = "127.0.0.1:18001"
protocol = "http"
upstream = "app"
limit_req = [{zone = "nowhere"}, {zone = "conns"}, {zone = "norate", burst = 2, delay = 3},
             {zone = "norate", nodelay = true, delay = 1, status = 401}]
limit_conn = {zone = "conns", conn = 0, speed = 3}
access = ["allow 10.0.0.0/33", "permit all"]

[[listen]]
address = "127.0.0.1:18002"
protocol = "tcp"
upstream = "app"
limit_req = {zone = "norate"}  # tcp listeners have allow/deny and limit_conn only (edge/tcp_guard.py)

[[route]]
prefix = "/a"
upstream = "app"
auth_basic = "Say \\"hi\\""
auth_basic_user_file = "{missing}"

[[route]]
prefix = "/b"
upstream = "app"
auth_basic = "Staff"
auth_basic_user_file = "{unusable}"

[[route]]
prefix = "/c"
upstream = "app"
auth_basic = "Staff"

[[route]]
prefix = "/d"
upstream = "app"
access = ["deny 10.1.2.3/8"]

[[upstream]]
name = "app"
servers = ["127.0.0.1:9"]
"""


def test_every_bad_key_is_named_with_its_file_and_reason(tmp_path: Path) -> None:
    unusable = tmp_path / "htpasswd"
    unusable.write_text("alice:$apr1$abc$def\nbob:plaintext\n")
    config = tmp_path / "bad.toml"
    config.write_text(BAD.replace("{missing}", str(tmp_path / "nope")).replace("{unusable}", str(unusable)))
    result = ukproxy_check(config)
    assert result.returncode == 1
    out = result.stderr
    expected = [
        ("limit_req_zone[0].rate", 'expected a rate such as "10r/s"'),
        ("limit_req_zone[0].size", "must be between 32k and 1g"),
        ("limit_req_zone[1].rate", "required key is missing"),
        ("limit_conn_zone[0].key", 'expected "remote_addr", "site" or "header:NAME"'),
        ("limit_conn_zone[0].name", "duplicate zone name 'perip'"),
        ("listen[0].limit_req[0].zone", "no limit_req_zone named 'nowhere'"),
        ("listen[0].limit_req[1].zone", "'conns' is a limit_conn_zone, not a limit_req_zone"),
        ("listen[0].limit_req[2].delay", "delay (3) is larger than burst (2)"),
        ("listen[0].limit_req[3].delay", "nodelay and delay cannot both be set"),
        ("listen[0].limit_req[3].status", "401 would ask the client for credentials"),
        ("listen[0].limit_req", "zone 'norate' is used twice"),
        ("listen[0].limit_conn.conn", "must be at least 1"),
        ("listen[0].limit_conn.speed", "unknown key"),
        ("listen[0].access", "item 0: '10.0.0.0/33' is not an IPv4 or IPv6 address or network"),
        ("listen[1].limit_req", "nginx's stream module has no limit_req either"),
        ("route[0].auth_basic", "a realm is printable text without quotes"),
        ("route[0].auth_basic_user_file", "no file"),
        ("route[1].auth_basic_user_file", "line 2: user 'bob' has a hash ukproxy cannot check"),
        ("route[2].auth_basic_user_file", "auth_basic needs an htpasswd file"),
        ("route[3].access", "has host bits set"),
    ]
    for key, reason in expected:
        assert any(f"{config}: {key}: " in line and reason in line for line in out.splitlines()), \
            (key, reason, out)
