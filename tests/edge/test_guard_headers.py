"""A route's response header rules on the proxy's own refusals (403 allow/deny, 429 limit_req, 401 basic auth),
as nginx's `add_header ... always`: with `always` every answer carries them, without it only the statuses
add_header lists (edge/headers.py). Real curl, HTTP/1.1 and HTTP/2, through the package's guarded ukproxy."""

from __future__ import annotations

from tests.edge.guard_proxy import Guarded
from tests.edge.rules_proxy import curl


def test_access_refusal_carries_always_rules_only(guarded: Guarded) -> None:
    always = curl(guarded.url("denied", "/ruled-always/x"))
    assert always.status == 403
    assert always.header("X-Edge") == "always" and always.header("X-For") == "127.0.0.1"
    plain = curl(guarded.url("denied", "/ruled/x"))
    assert plain.status == 403 and plain.header("X-Edge") is None  # add_header without always: not on a 403


def test_h2_refusal_carries_always_rules(guarded: Guarded) -> None:
    always = curl(guarded.url("denied_h2", "/ruled-always/x"), "--http2-prior-knowledge")
    assert always.status == 403 and always.header("x-edge") == "always"
    plain = curl(guarded.url("denied_h2", "/ruled/x"), "--http2-prior-knowledge")
    assert plain.status == 403 and plain.header("x-edge") is None


def test_rate_limit_refusal_carries_always_rules(guarded: Guarded) -> None:
    # The "forwarded" listener: 1r/m per client address, taken from X-Forwarded-For (127.0.0.1 is trusted).
    client = ["-H", "X-Forwarded-For: 198.51.100.77"]
    first = curl(guarded.url("forwarded", "/ruled-always/x"), *client)
    assert first.status == 200 and first.header("X-Edge") == "always"
    refused = curl(guarded.url("forwarded", "/ruled-always/x"), *client)
    assert refused.status == 429
    assert refused.header("X-Edge") == "always" and refused.header("X-For") == "198.51.100.77"
    refused = curl(guarded.url("forwarded", "/ruled/x"), *client)
    assert refused.status == 429 and refused.header("X-Edge") is None


def test_auth_challenge_carries_always_rules(guarded: Guarded) -> None:
    challenged = curl(guarded.url("staff", "/ruled-always/x"))
    assert challenged.status == 401 and challenged.header("X-Edge") == "always"
    assert challenged.header("WWW-Authenticate") == 'Basic realm="Staff only"'
    assert curl(guarded.url("staff", "/ruled/x")).header("X-Edge") is None
    admitted = curl(guarded.url("staff", "/ruled/x"), "-u", "bob:b:u:i:l:d")  # test_auth_basic changes alice
    assert admitted.status == 200 and admitted.header("X-Edge") == "success only"


def test_upstream_answers_follow_the_same_status_rule(guarded: Guarded) -> None:
    # "only_me_v6" lets ::1 in: these are the upstream's own answers.
    assert curl(guarded.url("only_me_v6", "/ruled/status/201")).header("X-Edge") == "success only"
    error = curl(guarded.url("only_me_v6", "/ruled/status/503"))
    assert error.status == 503 and error.header("X-Edge") is None
    assert error.header("Server") is None  # remove applies to every upstream answer, as proxy_hide_header
    error = curl(guarded.url("only_me_v6", "/ruled-always/status/503"))
    assert error.status == 503 and error.header("X-Edge") == "always"
