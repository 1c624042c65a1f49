"""`python -m bench.shortener [--quick]`: the link shortener split into unikernels and composed by ukproxy
(conf/shortener.toml) against its one-process original (unikernels/build/host/shortener-original, built
from the same C code), in one run. Needs root (the split's backend network).

Load: wrk at 64 connections, a mixed Lua workload (90 % redirects, 8 % the page, 2 % creates) and each
route alone; req/s, p50/p99, CPU per request (every process of the stack: the original, or ukproxy's
master, workers and every QEMU), total RSS after the load, and the time from start to the first 200.
Isolation: an api VM SIGKILLed under load (errors counted, the page still answering), a request that
crashes the api code (its test hook, bench.shortener_crash: failures per kind and the time back to full
service), kv SIGKILLed (acknowledged links still resolve after the fleet replaces it), and the same faults
against the original.
kv against redis-server is bench.kv. Writes bench/results/shortener.md and shortener.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from bench.procs import free_port, terminate, wait_for
from bench.report import write_results
from bench.shortener_crash import crash_under_load, describe, request
from bench.tools import cpu_model, require

REPO = Path(__file__).resolve().parent.parent
ORIGINAL = REPO / "unikernels" / "build" / "host" / "shortener-original"
SITE = REPO / "apps" / "shortener" / "site"
CONFIG = REPO / "conf" / "shortener.toml"
RESULTS = Path(__file__).resolve().parent / "results"
CONNECTIONS = 64
SEED_LINKS = 200

MIXED_LUA = """
local codes = {%s}
local body = '{"url":"https://example.org/bench"}'
local json = {["Content-Type"] = "application/json"}
request = function()
  local r = math.random(100)
  if r <= %d then return wrk.format("GET", "/r/" .. codes[math.random(#codes)]) end
  if r <= %d then return wrk.format("GET", "/") end
  return wrk.format("POST", "/api/links", json, body)
end
"""
WORKLOADS = {"mixed": (90, 98), "redirect": (100, 100), "page": (0, 100), "create": (0, 0)}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


_opener = urllib.request.build_opener(NoRedirect)


def http(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 10) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _opener.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def create(port: int, url: str) -> str | None:
    status, body = http(port, "POST", "/api/links", json.dumps({"url": url}).encode())
    return json.loads(body)["code"] if status == 201 else None


class Stack:
    """One way of serving the program on a loopback port."""

    name = ""
    port = 0

    def processes(self) -> list[psutil.Process]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss_mib(self) -> float:
        total = 0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20


class Original(Stack):
    name = "original"

    def __init__(self, data: Path, appendfsync: str = "always") -> None:
        self.data, self.port, self.appendfsync = data, free_port(), appendfsync
        self.started_in = self.start()

    def start(self) -> float:
        began = time.monotonic()
        self.proc = subprocess.Popen([str(ORIGINAL), "--port", str(self.port), "--site", str(SITE),
                                      "--data", str(self.data), "--appendfsync", self.appendfsync, "--crash-hook"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: http(self.port, "GET", "/", timeout=1)[0] == 200, "the original's first 200", 30)
        return time.monotonic() - began

    def processes(self) -> list[psutil.Process]:
        return [psutil.Process(self.proc.pid)] if self.proc.poll() is None else []

    def stop(self) -> None:
        terminate(self.proc)


class Split(Stack):
    """ukproxy running conf/shortener.toml, with this run's ports, namespace and kv share."""

    name = "split"

    def __init__(self, workdir: Path, appendfsync: str = "always") -> None:
        self.port, kv_port, self.metrics = free_port(), free_port(), free_port()
        self.netns = f"ukb-short-{os.getpid() % 100000}"
        data = workdir / "kv"
        data.mkdir(mode=0o755)
        os.chown(data, pwd.getpwnam("nobody").pw_uid, -1)  # QEMU writes kv's log as the workers' user
        workdir.chmod(0o755)
        text = CONFIG.read_text()
        for old, new in (('"127.0.0.1:8080"', f'"127.0.0.1:{self.port}"'),
                         ('address = "127.0.0.1:6379"', f'address = "127.0.0.1:{kv_port}"'),
                         ('"127.0.0.1:9146"', f'"127.0.0.1:{self.metrics}"'),
                         ('netns = "ukshort"', f'netns = "{self.netns}"'),
                         ('"run/shortener-kv"', f'"{data}"'),
                         ('"logs/shortener-access.log"', '"off"'),
                         ('"run/shortener.pid"', f'"{workdir / "ukproxy.pid"}"'),
                         ("appendfsync=always", f"appendfsync={appendfsync}"),
                         ('"service=api kv_timeout_ms=1000"', '"service=api kv_timeout_ms=1000 crash_hook=yes"')):
            assert old in text, old
            text = text.replace(old, new)
        config = workdir / "shortener.toml"
        config.write_text(text)
        self.log = open(workdir / "ukproxy.log", "ab")  # noqa: SIM115 - closed in stop()
        began = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "ukproxy", "run", "-c", str(config)], cwd=REPO,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.log_path = workdir / "ukproxy.log"
        try:
            wait_for(lambda: http(self.port, "GET", "/", timeout=1)[0] == 200, "the split's first 200", 120)
            self.started_in = time.monotonic() - began
            # api and kv are up too once a link can be made.
            wait_for(lambda: create(self.port, "https://example.org/warm") is not None, "a first link", 120)
        except RuntimeError as e:
            self.stop()
            raise RuntimeError(f"{e}; ukproxy's log:\n{self.log_path.read_text()[-3000:]}") from None

    def status_vms(self) -> list[dict[str, object]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/status", timeout=10) as r:
            return [vm for vm in json.loads(r.read())["vms"] if vm["state"] == "running"]

    def vm_pids(self, upstream: str) -> list[int]:
        return [int(vm["pid"]) for vm in self.status_vms() if vm["upstream"] == upstream]  # type: ignore[call-overload]

    def processes(self) -> list[psutil.Process]:
        try:
            master = psutil.Process(self.proc.pid)
            return [master, *master.children(recursive=True)]
        except psutil.Error:
            return []

    def stop(self) -> None:
        terminate(self.proc, 30)
        self.log.close()


def wrk(port: int, workload: str, codes: list[str], seconds: int, workdir: Path) -> dict[str, float]:
    redirects, pages = WORKLOADS[workload]
    script = workdir / f"{workload}.lua"
    script.write_text(MIXED_LUA % (", ".join(f'"{c}"' for c in codes), redirects, pages))
    done = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "5s", "--latency",
                           "-s", str(script), f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                          timeout=seconds + 60)
    return parse_wrk(done.stdout)


def parse_wrk(out: str) -> dict[str, float]:
    def ms(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": ms(re.search(r"(?m)^\s+50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": ms(re.search(r"(?m)^\s+99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "errors": errors + (int(bad.group(1)) if bad else 0),
    }


def load(stack: Stack, codes: list[str], seconds: int, workdir: Path, workloads: tuple[str, ...] = tuple(WORKLOADS),
         appendfsync: str = "always") -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for workload in workloads:
        cpu = stack.cpu_seconds()
        figures = wrk(stack.port, workload, codes, seconds, workdir)
        used = stack.cpu_seconds() - cpu
        rows.append({"stack": stack.name, "workload": workload, "appendfsync": appendfsync, **figures,
                     "cpu_us_per_request": used / max(figures["requests"], 1) * 1e6, "rss_mib": stack.rss_mib()})
    return rows


def under_load(stack: Stack, codes: list[str], seconds: int, workdir: Path, fault: Callable[[], None],
               ) -> tuple[dict[str, float], bool]:
    """The mixed workload with `fault` done a third of the way in; whether the page answered meanwhile."""
    page_ok: list[bool] = []
    result: dict[str, float] = {}

    def run() -> None:
        result.update(wrk(stack.port, "mixed", codes, seconds, workdir))

    t = threading.Thread(target=run)
    t.start()
    time.sleep(seconds / 3)  # the fault lands mid-run: wrk has a fixed duration, so this is a schedule, not a wait
    fault()
    page_ok.append(http(stack.port, "GET", "/", timeout=5)[0] == 200)
    t.join()
    return result, all(page_ok)


def survivors(port: int, links: dict[str, str]) -> int:
    """How many of the acknowledged links still redirect to their URL."""
    kept = 0
    for code in links:
        # 302 or 404 is kv's answer; a 502/503 or a refused connection is a service still coming back.
        deadline = time.monotonic() + 30
        while (status := http(port, "GET", f"/r/{code}")[0]) not in (302, 404) and time.monotonic() < deadline:
            time.sleep(0.1)
        kept += status == 302
    return kept


def crash_split(split: Split, codes: list[str]) -> dict[str, object]:
    """POST /api/crash through ukproxy: the api VM that takes it faults and the fleet replaces it."""
    api = split.vm_pids("api")

    def crash() -> str:
        return f"{request(split.port, 'POST', '/api/crash', b'')} from ukproxy"

    row = crash_under_load(split.port, codes, crash, back_within_s=120)
    after = split.vm_pids("api")
    gone = len(set(api) - set(after))
    return {"stack": "split", "fault": f"a request that crashes the api code (one of {len(api)} api VMs)",
            **row, "page_answered": row["page_failed"] == 0,
            "outcome": describe(row, "not back within 120s") + f"; crash request: {row['crash_answer']}; "
                       f"api VMs gone {gone}, new {len(set(after) - set(api))}"}


def isolation_split(split: Split, codes: list[str], seconds: int, workdir: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    api = split.vm_pids("api")
    figures, page = under_load(split, codes, seconds, workdir, lambda: os.kill(api[0], signal.SIGKILL))
    rows.append({"stack": "split", "fault": f"SIGKILL one of {len(api)} api VMs under load", **figures,
                 "page_answered": page, "outcome": f"{figures['errors']:.0f} errors in {figures['requests']:.0f}"})
    rows.append(crash_split(split, codes))
    links = {c: u for c, u in ((create(split.port, f"https://example.org/acked/{i}"), "") for i in range(20)) if c}
    (kv,) = split.vm_pids("kv")
    os.kill(kv, signal.SIGKILL)
    began = time.monotonic()
    wait_for(lambda: [p for p in split.vm_pids("kv") if p != kv] != [], "kv replaced", 120)
    wait_for(lambda: http(split.port, "GET", f"/r/{next(iter(links))}")[0] == 302, "links resolving again", 60)
    back = time.monotonic() - began
    page = http(split.port, "GET", "/")[0] == 200
    rows.append({"stack": "split", "fault": "SIGKILL the kv VM", "page_answered": page,
                 "outcome": f"{survivors(split.port, links)}/{len(links)} acknowledged links survive; "
                            f"links resolve again after {back:.1f}s"})
    return rows


def crash_original(original: Original, codes: list[str]) -> dict[str, object]:
    """POST /api/crash: the api code's fault kills the one process, page and kv with it."""
    def crash() -> str:
        status = request(original.port, "POST", "/api/crash", b"")
        original.proc.wait(10)
        return f"{status or 'no answer'}; the process died of signal {-original.proc.returncode}"

    row = crash_under_load(original.port, codes, crash, back_within_s=10)
    original.start()
    return {"stack": "original", "fault": "a request that crashes the api code", **row,
            "page_answered": row["page_failed"] == 0,
            "outcome": describe(row, "not back within 10s: down until restarted by hand")
            + f"; crash request: {row['crash_answer']}"}


def isolation_original(original: Original, codes: list[str], seconds: int, workdir: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    figures, page = under_load(original, codes, seconds, workdir, lambda: original.proc.kill())
    rows.append({"stack": "original", "fault": "SIGKILL the process under load (its api part)", **figures,
                 "page_answered": page, "outcome": f"{figures['errors']:.0f} errors in {figures['requests']:.0f}; "
                                                   "everything down until restarted"})
    original.proc.wait()
    original.start()
    rows.append(crash_original(original, codes))
    links = {c: "" for c in (create(original.port, f"https://example.org/acked/{i}") for i in range(20)) if c}
    original.proc.kill()  # its kv part is the same process
    original.proc.wait()
    back = original.start()
    rows.append({"stack": "original", "fault": "SIGKILL the process (its kv part)", "page_answered": False,
                 "outcome": f"{survivors(original.port, links)}/{len(links)} acknowledged links survive after a "
                            f"restart by hand ({back:.2f}s)"})
    return rows


def redirects_everysec(seconds: int, work: Path) -> list[dict[str, object]]:
    """The redirect workload again with kv's log synced once a second: a redirect's INCR then waits for
    no fsync, in either stack."""
    rows: list[dict[str, object]] = []
    stack_types: tuple[type[Original], type[Split]] = (Original, Split)
    for stack_type in stack_types:
        folder = work / f"{stack_type.name}-everysec"
        folder.mkdir()
        stack = stack_type(folder, "everysec")
        try:
            rows += load(stack, seed(stack.port), seconds, work, ("redirect",), "everysec")
        finally:
            stack.stop()
    return rows


def seed(port: int) -> list[str]:
    codes = [c for c in (create(port, f"https://example.org/seed/{i}") for i in range(SEED_LINKS)) if c]
    if len(codes) < SEED_LINKS // 2:
        raise RuntimeError(f"only {len(codes)} of {SEED_LINKS} seed links were created")
    return codes


def run(quick: bool) -> dict[str, object]:
    seconds = 5 if quick else 10
    result: dict[str, object] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": cpu_model(),
                                 "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
                                 "quick": quick, "seconds": seconds, "connections": CONNECTIONS}
    load_rows: list[dict[str, object]] = []
    isolation: list[dict[str, object]] = []
    starts: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ukbench-short-") as tmp:
        work = Path(tmp)
        (work / "original").mkdir()
        original = Original(work / "original")
        try:
            starts["original"] = original.started_in
            codes = seed(original.port)
            load_rows += load(original, codes, seconds, work)
            isolation += isolation_original(original, codes, seconds, work)
        finally:
            original.stop()
        (work / "split").mkdir()
        split = Split(work / "split")
        try:
            starts["split"] = split.started_in
            found = re.search(r"request path: ([^(\n]*)", split.log_path.read_text())
            result["request_path"] = found.group(1).strip() if found else "?"
            codes = seed(split.port)
            load_rows += load(split, codes, seconds, work)
            isolation += isolation_split(split, codes, seconds, work)
        finally:
            split.stop()
        load_rows += redirects_everysec(seconds, work)
    result.update(load=load_rows, isolation=isolation, start_to_first_200_s=starts,
                  load_average_end=" ".join(f"{x:.1f}" for x in os.getloadavg()))
    return result


def render(result: dict[str, object]) -> str:
    starts = result["start_to_first_200_s"]
    lines = [
        "# The link shortener: split into unikernels (ukproxy, conf/shortener.toml) against its original", "",
        f"{result['started']}, {result['cpu']}, load average {result.get('load_average', '?')} at the start and "
        f"{result.get('load_average_end', '?')} at the end; QEMU under TCG; ukproxy's request path "
        f"{result.get('request_path', '?')}; wrk -c{result['connections']}, {result['seconds']} s per row, one run. "
        "CPU per request and RSS count every process of the stack (the original; ukproxy's master, workers and "
        "every QEMU).", "",
        f"Start to first 200 on `/`: original {starts['original']:.2f} s, split {starts['split']:.2f} s.", "",  # type: ignore[index]
        "| stack | workload | kv appendfsync | req/s | p50 ms | p99 ms | errors | CPU us/req | RSS MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["load"]:  # type: ignore[attr-defined]
        lines.append(f"| {r['stack']} | {r['workload']} | {r.get('appendfsync', 'always')} | {r['rps']:,.0f} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']:.0f} | {r['cpu_us_per_request']:.0f} | "
                     f"{r['rss_mib']:.0f} |")
    lines += ["", "## Isolation", "", "| stack | fault | page answered meanwhile | outcome |", "|---|---|---|---|"]
    for r in result["isolation"]:  # type: ignore[attr-defined]
        lines.append(f"| {r['stack']} | {r['fault']} | {'yes' if r['page_answered'] else 'no'} | {r['outcome']} |")
    lines += ["", "kv against redis-server natively (redis-benchmark -t set,get,incr, -P 1 and 16): "
              "`python -m bench.kv`, bench/results/kv.md."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.shortener", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 s per row instead of 10")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.shortener: needs root (the split's namespace, bridge and TAPs)", file=sys.stderr)
        return 2
    require("wrk")
    subprocess.run(["make", "-C", str(REPO / "unikernels"), "--no-print-directory", "-s"], check=True)
    result = run(args.quick)
    write_results(args.out, "shortener", result, render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
