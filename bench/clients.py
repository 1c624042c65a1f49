"""The load generators: wrk (keep-alive, --latency) and ab (with and without -k), run and parsed.

Each run is bounded: wrk by its duration (plus a timeout on the process), ab by a request count and
a time limit. A run that exits non-zero or whose output cannot be parsed raises ClientFailed;
request errors (socket errors, non-2xx answers, ab's failed requests) are counted, never hidden.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass, field


class ClientFailed(RuntimeError):
    pass


@dataclass
class RunResult:
    client: str  # "wrk", "ab", "ab -k"
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors + non-2xx/3xx + failed requests
    seconds: float
    percentiles_ms: dict[str, float] = field(default_factory=dict)
    error_detail: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _duration_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out: str, connections: int) -> RunResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+\w+),", out)
    if not rps or not total:
        raise ClientFailed(f"cannot parse wrk output:\n{out}")
    percentiles = {
        p: _duration_ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.MULTILINE)
    }
    detail: dict[str, int] = {}
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        for name, value in zip(("connect", "read", "write", "timeout"), sock.groups(), strict=True):
            if int(value):
                detail[name] = int(value)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        detail["non2xx"] = int(non2xx.group(1))
    return RunResult(
        client="wrk", connections=connections, rps=float(rps.group(1)),
        p50_ms=percentiles.get("50", float("nan")), p99_ms=percentiles.get("99", float("nan")),
        requests=int(total.group(1)), errors=sum(detail.values()),
        seconds=_duration_ms(total.group(2)) / 1000, percentiles_ms=percentiles, error_detail=detail,
    )


AB_TIMEOUT = "apr_pollset_poll: The timeout specified has expired"


def parse_ab(out: str, connections: int, keepalive: bool, requested: int = 0) -> RunResult:
    """ab's figures; when ab gave up on a reply (-s timeout) it prints none: a run with 0 req/s and the
    requests it did not complete counted as errors, so the run shows up as failed, not as missing."""
    stalled = re.search(r"Total of (\d+) requests completed", out)
    if AB_TIMEOUT in out and stalled:
        done = int(stalled.group(1))
        return RunResult(client="ab -k" if keepalive else "ab", connections=connections, rps=0.0,
                         p50_ms=float("nan"), p99_ms=float("nan"), requests=done,
                         errors=max(1, requested - done), seconds=float("nan"),
                         error_detail={"ab_reply_timeout": max(1, requested - done)})
    rps = re.search(r"Requests per second:\s+([\d.]+)", out)
    complete = re.search(r"Complete requests:\s+(\d+)", out)
    taken = re.search(r"Time taken for tests:\s+([\d.]+) seconds", out)
    if not rps or not complete or not taken:
        raise ClientFailed(f"cannot parse ab output:\n{out}")
    percentiles = {p: float(v) for p, v in re.findall(r"^\s+(50|66|75|80|90|95|98|99|100)%\s+(\d+)", out,
                                                       re.MULTILINE)}
    detail: dict[str, int] = {}
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    if failed and int(failed.group(1)):
        detail["failed"] = int(failed.group(1))
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    if non2xx:
        detail["non2xx"] = int(non2xx.group(1))
    return RunResult(
        client="ab -k" if keepalive else "ab", connections=connections, rps=float(rps.group(1)),
        p50_ms=percentiles.get("50", float("nan")), p99_ms=percentiles.get("99", float("nan")),
        requests=int(complete.group(1)), errors=sum(detail.values()), seconds=float(taken.group(1)),
        percentiles_ms=percentiles, error_detail=detail,
    )


def wrk_argv(url: str, connections: int, seconds: float, threads: int = 2) -> list[str]:
    threads = max(1, min(threads, connections))
    duration = f"-d{max(1, round(seconds))}s"  # wrk takes whole seconds only
    return ["wrk", f"-t{threads}", f"-c{connections}", duration, "--timeout=5s", "--latency", url]


def ab_argv(url: str, connections: int, requests: int, keepalive: bool, time_limit: float) -> list[str]:
    """ab stops at `requests` or `time_limit` seconds, whichever first. -t resets -n to 50000, so -n comes after."""
    return ["ab", "-q", "-r", "-s", "5", "-t", f"{time_limit:g}", "-n", str(requests), "-c", str(connections),
            *(["-k"] if keepalive else []), url]


def run_parallel(argvs: list[list[str]], timeout: float) -> list[str]:
    """Runs the client processes side by side; their outputs, or ClientFailed naming the one that failed."""
    procs: list[subprocess.Popen[str]] = []
    outs = []
    try:
        for a in argvs:
            procs.append(subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, text=True))
        for argv, p in zip(argvs, procs, strict=True):
            try:
                out, _ = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise ClientFailed(f"{' '.join(argv)} did not finish in {timeout:.0f}s") from None
            if p.returncode != 0 and AB_TIMEOUT not in out:  # an ab timeout is a result with errors
                raise ClientFailed(f"{' '.join(argv)} exited {p.returncode}:\n{out[-3000:]}")
            outs.append(out)
    except FileNotFoundError as e:
        raise ClientFailed(f"cannot run {e.filename}") from None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


def wrk(url: str, connections: int, seconds: float, prefix: list[str] | None = None) -> RunResult:
    out = run_parallel([[*(prefix or []), *wrk_argv(url, connections, seconds)]], seconds + 30)[0]
    return parse_wrk(out, connections)


def ab(url: str, connections: int, requests: int, keepalive: bool, time_limit: float,
       prefix: list[str] | None = None) -> RunResult:
    out = run_parallel([[*(prefix or []), *ab_argv(url, connections, requests, keepalive, time_limit)]],
                       time_limit + 30)[0]
    return parse_ab(out, connections, keepalive, requests)
