"""Server: validation, connection counting, passive health (nginx max_fails/fail_timeout), EWMA."""

from __future__ import annotations

import pytest

from ukproxy.upstream.server import Server


def test_default_name_is_host_and_port() -> None:
    assert Server("10.77.0.10", 8080).name == "10.77.0.10:8080"
    assert Server("::1", 80).name == "[::1]:80"
    assert Server("10.77.0.10", 8080, name="vm-3").name == "vm-3"


@pytest.mark.parametrize(
    "options",
    [{"port": 0}, {"weight": 0}, {"max_fails": -1}, {"fail_timeout": -1.0}, {"max_conns": -1},
     {"ewma_alpha": 0.0}, {"ewma_alpha": 1.5}],
)
def test_bad_settings_are_refused(options: dict[str, float]) -> None:
    settings: dict[str, object] = {"host": "10.77.0.10", "port": 8080, **options}
    with pytest.raises(ValueError):
        Server(**settings)  # type: ignore[arg-type]


def test_servers_compare_by_identity() -> None:
    one, same_address = Server("10.77.0.10", 80), Server("10.77.0.10", 80)
    assert one != same_address
    assert len({one, same_address, one}) == 2


def test_connection_counting() -> None:
    server = Server("10.77.0.10", 80)
    server.connection_started()
    server.connection_started()
    server.connection_finished()
    assert (server.active, server.requests) == (1, 2)
    server.connection_finished()
    server.connection_finished()  # unbalanced: stays at zero
    assert server.active == 0


def test_max_conns_makes_server_unavailable_while_full() -> None:
    server = Server("10.77.0.10", 80, max_conns=2)
    server.connection_started()
    assert server.available(0.0)
    server.connection_started()
    assert not server.available(0.0)
    server.connection_finished()
    assert server.available(0.0)


def test_down_and_failed_health_check_are_unavailable() -> None:
    assert not Server("10.77.0.10", 80, down=True).available(0.0)
    server = Server("10.77.0.10", 80)
    server.health_ok = False
    assert not server.available(0.0)


def test_max_fails_within_fail_timeout_disables_until_timeout_passes() -> None:
    server = Server("10.77.0.10", 80, max_fails=3, fail_timeout=10.0)
    server.record_failure(100.0)
    server.record_failure(101.0)
    assert server.available(102.0)
    server.record_failure(102.0)
    assert not server.available(102.0)
    assert not server.available(112.0)  # exactly fail_timeout later: still out (nginx uses <=)
    assert server.available(112.5)


def test_failures_spread_wider_than_fail_timeout_do_not_add_up() -> None:
    server = Server("10.77.0.10", 80, max_fails=2, fail_timeout=10.0)
    server.record_failure(100.0)
    server.record_failure(111.0)
    assert server.available(111.0)
    server.record_failure(112.0)
    assert not server.available(112.0)


def test_one_trial_after_fail_timeout_then_success_restores() -> None:
    server = Server("10.77.0.10", 80, max_fails=1, fail_timeout=10.0)
    server.record_failure(100.0)
    assert server.available(111.0)
    server.selected(111.0)  # the trial request
    assert not server.available(111.5)  # no second trial while the first is out
    server.record_success()
    assert server.fails == 0
    assert server.available(111.5)


def test_failed_trial_keeps_server_out_for_another_fail_timeout() -> None:
    server = Server("10.77.0.10", 80, max_fails=3, fail_timeout=10.0)
    for t in (100.0, 100.5, 101.0):
        server.record_failure(t)
    server.selected(112.0)
    server.record_failure(112.5)
    assert not server.available(113.0)
    assert not server.available(122.5)
    assert server.available(123.0)


def test_success_of_a_request_started_before_the_failure_does_not_clear_it() -> None:
    server = Server("10.77.0.10", 80, max_fails=1, fail_timeout=10.0)
    server.selected(100.0)
    server.record_failure(101.0)
    server.record_success()  # the slow request picked at 100.0 finishing well
    assert not server.available(102.0)


def test_max_fails_zero_turns_passive_health_off() -> None:
    server = Server("10.77.0.10", 80, max_fails=0)
    for t in range(10):
        server.record_failure(float(t))
    assert server.available(10.0)


def test_failure_lowers_effective_weight() -> None:
    server = Server("10.77.0.10", 80, weight=6, max_fails=3)
    server.record_failure(0.0)
    assert server.effective_weight == 4
    for t in (0.1, 0.2, 0.3):
        server.record_failure(t)
    assert server.effective_weight == 0


def test_ewma_of_response_times() -> None:
    server = Server("10.77.0.10", 80, ewma_alpha=0.5)
    server.record_success()
    assert server.ewma_response_time is None
    server.record_success(0.2)
    assert server.ewma_response_time == pytest.approx(0.2)
    server.record_success(0.4)
    assert server.ewma_response_time == pytest.approx(0.3)
    server.record_success(0.1)
    assert server.ewma_response_time == pytest.approx(0.2)
