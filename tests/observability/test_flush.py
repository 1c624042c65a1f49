"""The flusher's histogram arithmetic, in real worker-like processes sharing one multiprocess directory:
bucket deltas land in the right `le` buckets and two processes' observations add up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.observability.helpers import Scrape, histograms_consistent
from tests.running import REPO
from ukproxy.metrics.multiproc import archive_dead

RECORDER = textwrap.dedent("""
    import asyncio, sys
    from ukproxy.accept_cycle import AcceptCycle
    from ukproxy.metrics.flush import WorkerMetricsFlusher
    from ukproxy.worker_state import WorkerState

    loop = asyncio.new_event_loop()
    state = WorkerState(loop, 0, 64)
    flusher = WorkerMetricsFlusher(state, AcceptCycle(state, [], None, 0.5, False), 0)
    for i, t in enumerate(float(x) for x in sys.argv[1:]):
        state.request_finished("l", "app", 200 + 100 * (i % 4), t, t / 2, "10.0.0.1:80", None, b"127.0.0.1", 10)
        if i == 2:
            flusher.flush()  # a flush in the middle: deltas, not totals, are added
    flusher.flush()
""")


def record(directory: Path, times: list[float]) -> int:
    """Run a worker-like process that records `times`; its pid."""
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory))
    proc = subprocess.Popen([sys.executable, "-c", RECORDER, *map(str, times)], cwd=REPO, env=env)
    assert proc.wait(timeout=60) == 0
    return proc.pid


def samples(page: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(page) for s in family.samples}


def scrape(directory: Path) -> str:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry).decode()


def test_histogram_buckets_add_up_across_processes(tmp_path: Path) -> None:
    first = [0.0004, 0.003, 0.003, 0.2, 7.0]
    second = [0.0005, 0.04, 100.0]  # 0.0005 sits exactly on a bound: le is inclusive
    record(tmp_path, first)
    record(tmp_path, second)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    page = Scrape(generate_latest(registry).decode())

    times = first + second
    name = "ukproxy_request_duration_seconds"
    for le in ("0.0005", "0.005", "0.25", "10.0", "+Inf"):
        expected = sum(1 for t in times if t <= float(le))
        assert page.value(f"{name}_bucket", listener="l", upstream="app", le=le) == expected, le
    assert page.value(f"{name}_count") == len(times)
    assert abs(page.value(f"{name}_sum") - sum(times)) < 1e-9
    halves = [t / 2 for t in times]  # the recorder's upstream times
    assert page.value("ukproxy_upstream_response_time_seconds_bucket", le="0.0025") == sum(t <= 0.0025 for t in halves)
    # statuses cycle 200, 300, 400, 500 per process: 2xx at i = 0 and 4 in the first, i = 0 in the second
    assert page.value("ukproxy_requests_total", status_class="2xx") == 3
    assert page.value("ukproxy_requests_total", status_class="5xx") == 1
    assert page.value("ukproxy_requests_total") == len(times)
    assert len(histograms_consistent(page)) == 2


def test_dead_workers_files_fold_into_the_archive_and_the_totals_stay(tmp_path: Path) -> None:
    pids = [record(tmp_path, [0.001 * (i + 1), 0.3, 12.0]) for i in range(3)]
    before = scrape(tmp_path)
    for pid in pids:
        assert (tmp_path / f"counter_{pid}.db").exists() and (tmp_path / f"histogram_{pid}.db").exists()
        archive_dead(pid, str(tmp_path))
    # one set of summed files left, however many processes came and went
    assert sorted(p.name for p in tmp_path.glob("*.db") if not p.name.startswith("gauge")) == [
        "counter_archive.db", "histogram_archive.db"]
    after = samples(scrape(tmp_path))
    assert after.keys() == samples(before).keys()
    assert all(abs(after[k] - v) < 1e-9 for k, v in samples(before).items())  # sums may add in another order
    page = Scrape(before)
    assert page.value("ukproxy_requests_total") == 9
    assert page.value("ukproxy_request_duration_seconds_bucket", listener="l", upstream="app", le="+Inf") == 9
    pid = record(tmp_path, [0.002])  # a later process adds to what the archive holds
    archive_dead(pid, str(tmp_path))
    assert Scrape(scrape(tmp_path)).value("ukproxy_requests_total") == 10
