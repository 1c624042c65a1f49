"""The markdown report: summary table with ratios, targets, sweeps, worker spread and VM figures; and
how every bench module writes its results (JSON and markdown)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.summary import Cell, cells, find, ratio, reference, targets


def write_results(out: Path, name: str, result: dict[str, Any], text: str) -> None:
    """A bench module's results: `name`.json (the figures) and `name`.md (`text`, also printed)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{name}.md").write_text(text)
    print(text)


def _r(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _err(c: Cell) -> str:
    return f"**{c.errors} ⚠**" if c.errors else "0"


def _cpu(c: Cell) -> str:
    if c.cpu_user_us is None or c.cpu_system_us is None:
        return "-"
    return f"{c.cpu_user_us + c.cpu_system_us:.1f} ({c.cpu_user_us:.1f} + {c.cpu_system_us:.1f})"


def table(cs: list[Cell], suite: str, client: str, conns: int) -> list[str]:
    rows = [c for c in cs if c.suite == suite and c.client == client and c.connections == conns and not c.mode]
    if not rows:
        return []
    out = ["| scenario | req/s (median) | min-max | p50 ms | p99 ms | errors | vs nginx | vs direct | "
           "proxy CPU µs/req (usr + sys) | client |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    direct = find(cs, suite, "direct", client, conns)
    for c in rows:
        out.append(f"| {c.scenario} | {c.rps:,.0f} | {c.rps_min:,.0f}-{c.rps_max:,.0f} | {c.p50_ms:.2f} | "
                   f"{c.p99_ms:.2f} | {_err(c)} | {_r(ratio(c, reference(cs, c)))} | {_r(ratio(c, direct))} | "
                   f"{_cpu(c)} | {c.placement} |")
    return out


def render(run: dict[str, Any]) -> str:
    st = run["settings"]
    cs = cells(run["records"])
    m = run["machine"]
    lines = [
        "# ukproxy benchmark", "",
        f"{run['started']} · {m['cpu_model']}, {m['usable_cpus']} usable cores · python {m['python']}, "
        f"uvloop {m['uvloop']}, nginx {m['nginx']}, qemu {m['qemu']}, wrk {m['wrk']}, ab {m['ab']}, "
        f"haproxy {m['haproxy']} · {'quick' if run['quick'] else 'full'} run, {st['reps']} interleaved "
        f"repetition(s) per figure (median, min-max), {st['workers']} workers for every proxy and backend, "
        f"wrk {st['wrk_seconds']} s per run.", "",
    ]
    errors = sum(r["errors"] for r in run["records"])
    if errors:
        lines += [f"> ⚠ **{errors} request errors in this run**: figures marked ⚠ come from runs with errors "
                  "(socket errors, non-2xx answers, ab failed requests); see the JSON for details.", ""]
    for suite, title in (("native", "Native backend (nginx `return 200` on loopback)"),
                         ("vm", "Unikernel VM pool (TCG, one VM per worker)")):
        for client, conns, what in (("wrk", st["main_connections"], "wrk, keep-alive"),
                                    ("wrk", max(st["vm_connections"]), "wrk, keep-alive"),
                                    ("ab -k", st["ab_connections"], "ab -k, keep-alive"),
                                    ("ab", st["ab_connections"], "ab without -k: `Connection: close`")):
            t = table(cs, suite, client, conns)
            if t and f"{suite}{client}{conns}" not in lines:
                lines += [f"## {title}: {what}, {conns} connections", "", *t, ""]
    if any(c.suite == "vm" for c in cs):
        lines += ["Client placement differs for the VM pool: ukproxy is measured from the host namespace on "
                  "127.0.0.1 (it reaches the VMs from inside their namespace itself); nginx and `direct` run, with "
                  "their client, inside the backend namespace (nginx on that namespace's loopback).", ""]
    lines += _targets(targets(cs, {"native": st["main_connections"], "vm": max(st["vm_connections"])},
                              st["ab_connections"]))
    lines += _sweep(cs)
    lines += _modes(run["records"], cs)
    lines += _vm_figures(run.get("vm_figures"))
    return "\n".join(lines) + "\n"


def _targets(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    out = ["## Targets", "", "| backend | client | conns | target | measured | met |", "|---|---|---:|---|---:|---|"]
    for r in rows:
        met = "yes" if r["met"] else "**no**"
        if r["errors_in_inputs"]:
            met += " ⚠ errors"
        out.append(f"| {r['suite']} | {r['client']} | {r['connections']} | {r['target']} | {r['value']:.2f}x | {met} |")
    return [*out, ""]


def _sweep(cs: list[Cell]) -> list[str]:
    rows = [c for c in cs if c.suite == "native" and c.client == "wrk" and not c.mode]
    conns = sorted({c.connections for c in rows})
    if len(conns) < 2:
        return []
    names = list(dict.fromkeys(c.scenario for c in rows))
    out = ["## Native backend, wrk: req/s (p99 ms) by connections", "",
           "| scenario | " + " | ".join(str(c) for c in conns) + " |", "|---|" + "---:|" * len(conns)]
    for n in names:
        cells_ = [find(cs, "native", n, "wrk", c) for c in conns]
        out.append(f"| {n} | " + " | ".join(
            "-" if c is None else f"{c.rps:,.0f} ({c.p99_ms:.1f}){' ⚠' if c.errors else ''}" for c in cells_) + " |")
    return [*out, "", "![throughput](throughput.png) ![latency](latency.png)", ""]


def _modes(records: list[dict[str, Any]], cs: list[Cell]) -> list[str]:
    mode_recs = [r for r in records if r.get("mode")]
    if not mode_recs:
        return []
    out = ["## ukproxy tcp: accept_mutex on / off / reuseport (native backend, wrk)", "",
           "| mode | conns | req/s (median) | min-max | p99 ms | errors | accepted per worker (each run) | "
           "open per worker midway |", "|---|---:|---:|---:|---:|---:|---|---|"]
    for c in cs:
        if not c.mode:
            continue
        rs = [r for r in mode_recs if r["mode"] == c.mode and r["connections"] == c.connections]
        acc = "; ".join("/".join(str(v) for v in sorted(r["accepted_per_worker"].values(), reverse=True)) for r in rs)
        opn = "; ".join("/".join(str(v) for v in sorted(r["open_per_worker_midway"].values(), reverse=True))
                        for r in rs)
        out.append(f"| {c.mode} | {c.connections} | {c.rps:,.0f} | {c.rps_min:,.0f}-{c.rps_max:,.0f} | "
                   f"{c.p99_ms:.2f} | {_err(c)} | {acc} | {opn} |")
    return [*out, "", "![worker spread](spread.png)", ""]


def _vm_figures(v: dict[str, Any] | None) -> list[str]:
    if not v:
        return []
    out = ["## VM figures", ""]
    for key, label in (("boot", "Boot (exec → ready / → first HTTP 200), TCG"),):
        b = v.get(key)
        if b:
            out.append(f"- {label}: n = {b['n']}, ready median {b['ready_ms']['median']:.0f} ms "
                       f"(p5 {b['ready_ms']['p5']:.0f}, p95 {b['ready_ms']['p95']:.0f}, "
                       f"max {b['ready_ms']['max']:.0f}); "
                       f"first 200 median {b['first_200_ms']['median']:.0f} ms (p95 {b['first_200_ms']['p95']:.0f}). "
                       "![boot](boot.png)")
    if "pool_boot_ms" in v:
        p = v["pool_boot_ms"]
        out.append(f"- Boot as ukproxy logs it (\"ready in N ms\", every VM the run booted): n = {p['n']}, "
                   f"median {p['median']:.0f} ms, max {p['max']:.0f} ms")
    if "memory" in v:
        mm = v["memory"]
        out.append(f"- Memory per VM: guest RAM {mm['guest_ram_mib']} MiB; "
                   f"QEMU RSS median {mm['rss_mib_median']:.1f} MiB "
                   f"(min {mm['rss_mib_min']:.1f}, max {mm['rss_mib_max']:.1f}, {mm['n']} VMs, after load)")
    if "cold_warm" in v:
        cw = v["cold_warm"]
        out.append(f"- First request through ukproxy tcp, pool min = 0 (cold: the VM boots on demand) vs the next "
                   f"request (warm): cold median {cw['cold_ms']['median']:.0f} ms, warm median "
                   f"{cw['warm_ms']['median']:.1f} ms (n = {cw['n']})")
    if "scale" in v:
        s = v["scale"]
        out.append(f"- Scale-up under a step in load (pool min {s['min']} → max {s['max']}, "
                   f"max_conns {s['max_conns']}, "
                   f"overflow = spawn, {s['connections']} wrk connections, 1 worker): all {s['max']} VMs in rotation "
                   f"after {s['seconds_to_max']:.2f} s; each step at " +
                   ", ".join(f"{t:.2f}" for t in s["steps_s"]) + f" s; wrk meanwhile {s['rps']:.0f} req/s, "
                   f"{s['errors']} errors")
    if "replace" in v:
        r = v["replace"]
        out.append(f"- Replacing a SIGKILLed VM (1 worker, pool min = max = 1): new VM in rotation after median "
                   f"{r['in_rotation_s']['median']:.2f} s, requests succeed again after median "
                   f"{r['serving_s']['median']:.2f} s (n = {r['n']})")
    return [*out, ""]
