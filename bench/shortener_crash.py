"""The isolation row "a request that crashes one service", for bench.shortener (docs/architecture.md).

Paced clients of each kind (the page, api creates, redirects) run while one request takes the api code's
crash test hook (POST /api/crash; boot key crash_hook=yes, the original's --crash-hook; see
unikernels/services/api/api.c). The row counts the requests of each kind that failed from the crash on
(a refused or reset connection, a timeout or a 5xx) and the time until every kind answers again. In the
split only the api VM that took the request dies and the fleet boots another; the one-process original
dies whole and stays down until someone restarts it.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable

KINDS = ("page", "api", "redirect")
CLIENTS_PER_KIND = 2
PACE_S = 0.05           # at most one request per client every 50 ms: a dead server is not hammered
TIMEOUT_S = 5.0
STEADY_S = 2.0          # full service: every kind answered, and no failure for this long


def request(port: int, method: str, path: str, body: bytes | None = None) -> int:
    """The status of one request on a new connection; 0 when none came (refused, reset, timed out)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json"} if body is not None else {})
        answer = conn.getresponse()
        answer.read()
        return answer.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


class PacedLoad:
    """CLIENTS_PER_KIND threads per kind, each sending one request after another; records
    (time answered, kind, ok) in order."""

    def __init__(self, port: int, codes: list[str]) -> None:
        self.port, self.codes = port, codes
        self.records: list[tuple[float, str, bool]] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(kind, i), daemon=True)
                        for kind in KINDS for i in range(CLIENTS_PER_KIND)]

    def one(self, kind: str, n: int) -> bool:
        if kind == "page":
            return request(self.port, "GET", "/") == 200
        if kind == "api":
            body = json.dumps({"url": f"https://example.org/crash-row/{n}"}).encode()
            return request(self.port, "POST", "/api/links", body) == 201
        return request(self.port, "GET", f"/r/{self.codes[n % len(self.codes)]}") == 302

    def client(self, kind: str, index: int) -> None:
        n = index
        while not self.stopping.is_set():
            began = time.monotonic()
            ok = self.one(kind, n)
            self.records.append((time.monotonic(), kind, ok))
            n += CLIENTS_PER_KIND
            self.stopping.wait(max(0.0, PACE_S - (time.monotonic() - began)))

    def __enter__(self) -> PacedLoad:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(TIMEOUT_S + 1)

    def answered_every_kind_since(self, since: float) -> bool:
        return {kind for at, kind, ok in list(self.records) if ok and at >= since} == set(KINDS)

    def last_failure(self) -> float | None:
        return max((at for at, _, ok in list(self.records) if not ok), default=None)


def crash_under_load(port: int, codes: list[str], crash: Callable[[], str], back_within_s: float,
                     ) -> dict[str, object]:
    """Runs the paced load, calls crash() (it sends the request and says what came back) once every kind
    answers, then waits up to back_within_s for full service. Per kind: failed and sent from the crash on;
    back_s: from the crash to the last failed request (every kind answered after it), None if the failures
    had not stopped by then."""
    with PacedLoad(port, codes) as load:
        warm_deadline = time.monotonic() + 60
        while not load.answered_every_kind_since(0.0):
            if time.monotonic() > warm_deadline:
                raise RuntimeError("the paced load never had an answer of every kind")
            time.sleep(0.05)
        crashed_at = time.monotonic()
        crash_answer = crash()
        deadline = crashed_at + back_within_s
        back = False
        while time.monotonic() < deadline:
            last = load.last_failure()
            quiet_since = max(last or crashed_at, crashed_at)
            if time.monotonic() - quiet_since >= STEADY_S and load.answered_every_kind_since(quiet_since):
                back = True
                break
            time.sleep(0.05)
        records = [r for r in load.records if r[0] >= crashed_at]
    row: dict[str, object] = {"crash_answer": crash_answer}
    for kind in KINDS:
        mine = [ok for _, k, ok in records if k == kind]
        row[f"{kind}_failed"], row[f"{kind}_sent"] = mine.count(False), len(mine)
    failures = [at for at, _, ok in records if not ok]
    back_s = (max(failures) - crashed_at if failures else 0.0) if back else None
    row["back_s"] = back_s
    return row


def describe(row: dict[str, object], not_back: str) -> str:
    """The outcome cell: failures per kind, and when service was whole again."""
    failed = ", ".join(f"{kind} {row[f'{kind}_failed']}/{row[f'{kind}_sent']}" for kind in KINDS)
    back = f"full service again after {row['back_s']:.1f}s" if row["back_s"] is not None else not_back
    return f"failed from the crash on: {failed}; {back}"
