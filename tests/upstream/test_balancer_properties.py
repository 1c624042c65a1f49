"""Properties every method keeps whatever the servers' states: checked with hypothesis."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ukproxy.upstream.balancing import BALANCING_METHODS, make_balancer
from ukproxy.upstream.server import Server

NOW = 1000.0

server_states = st.fixed_dictionaries(
    {
        "weight": st.integers(1, 5),
        "backup": st.booleans(),
        "down": st.booleans(),
        "health_ok": st.booleans(),
        "max_conns": st.integers(0, 2),
        "active": st.integers(0, 3),
        "fails": st.integers(0, 2),
        "failed_ago": st.sampled_from([1.0, 30.0]),
        "tried": st.booleans(),
    }
)


def build_server(index: int, state: dict[str, object]) -> Server:
    server = Server(
        f"10.77.0.{10 + index}", 8080, weight=state["weight"], backup=state["backup"],  # type: ignore[arg-type]
        down=state["down"], max_conns=state["max_conns"], max_fails=2, fail_timeout=10.0,  # type: ignore[arg-type]
    )
    server.health_ok = state["health_ok"]  # type: ignore[assignment]
    server.active = state["active"]  # type: ignore[assignment]
    for _ in range(state["fails"]):  # type: ignore[attr-defined]
        server.record_failure(NOW - state["failed_ago"])  # type: ignore[operator]
    return server


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(sorted(BALANCING_METHODS)),
    states=st.lists(server_states, max_size=6),
    key=st.one_of(st.none(), st.binary(max_size=8), st.sampled_from([b"10.1.2.3", b"2001:db8::1"])),
    seed=st.integers(0, 1000),
)
def test_pick_is_available_untried_and_prefers_primaries(
    method: str, states: list[dict[str, object]], key: bytes | None, seed: int
) -> None:
    pool = [build_server(i, state) for i, state in enumerate(states)]
    tried = [s for s, state in zip(pool, states, strict=True) if state["tried"]]
    options = {"rng": random.Random(seed)} if method == "random" else {}
    balancer = make_balancer(method, pool, **options)
    if len(pool) == 1:  # a lone server ignores passive health, as in nginx
        eligible = [s for s in pool if not (s.down or not s.health_ok or s.at_max_conns() or s in tried)]
    else:
        eligible = [s for s in pool if s.available(NOW) and s not in tried]

    chosen = balancer.pick(key=key, tried=tried, now=NOW)

    if not eligible:
        assert chosen is None
        return
    assert chosen in eligible
    if chosen.backup:
        assert all(s.backup for s in eligible)
