"""`python -m bench [--quick] [--only SUITES] [--out DIR]`: the comparison run, its table, JSON and plots.

Exit status: 0 all good; 1 some figures come from runs with request errors (reported, with a warning);
2 a tool is missing or a scenario failed (nothing is reported as a result).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import modes, report, stacks, tools
from bench.clients import ClientFailed
from bench.procs import Processes, install_signal_handlers
from bench.runner import ScenarioFailed, throughput
from bench.settings import FULL, QUICK

RESULTS = Path(__file__).resolve().parent / "results"
SUITES = ("native", "modes", "vm", "vmfigs")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one repetition, short runs (about a minute)")
    ap.add_argument("--only", default=",".join(SUITES), help=f"comma-separated subset of {','.join(SUITES)}")
    ap.add_argument("--scenarios", default="", help="comma-separated scenario names to keep (e.g. 'direct')")
    ap.add_argument("--connections", default="", help="override the wrk connection counts, e.g. 4,64")
    ap.add_argument("--seconds", type=float, default=0, help="override seconds per wrk run")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where latest.md/json and PNGs go")
    ap.add_argument("--no-ukproxy", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def needed_tools(suites: set[str]) -> list[str]:
    need = ["wrk", "ab", "nginx"]
    if suites & {"vm", "vmfigs"}:
        need += ["qemu-system-x86_64", "ip"]
    return need


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    suites = {s for s in args.only.split(",") if s}
    unknown = suites - set(SUITES)
    if unknown:
        print(f"bench: unknown suite(s) {sorted(unknown)}; choose from {SUITES}", file=sys.stderr)
        return 2
    st = QUICK if args.quick else FULL
    if args.connections:
        conns = tuple(int(c) for c in args.connections.split(","))
        st = dataclasses.replace(st, connections=conns, main_connections=conns[-1], mode_connections=conns)
    if args.seconds:
        st = dataclasses.replace(st, wrk_seconds=args.seconds, ab_seconds=args.seconds)
    try:
        tools.require(*needed_tools(suites))
        if suites & {"vm", "vmfigs"} and os.geteuid() != 0:
            raise tools.MissingTool("the VM suites need root (network namespaces, TAPs); use --only native,modes")
    except tools.MissingTool as e:
        print(f"bench: FAILED: {e}", file=sys.stderr)
        return 2

    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / "raw" / time.strftime("%Y%m%d-%H%M%S")
    raw.mkdir(parents=True, exist_ok=True)
    procs = Processes(raw)
    install_signal_handlers()
    run: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": args.quick,
                           "suites": sorted(suites), "settings": dataclasses.asdict(st),
                           "machine": tools.machine(), "records": [], "notes": []}
    if not tools.have("haproxy"):
        run["notes"].append("haproxy is not installed: its scenarios were skipped")
    t0 = time.monotonic()
    try:
        _run_suites(run, procs, st, suites, args)
    except (ScenarioFailed, ClientFailed, RuntimeError, TimeoutError) as e:
        (raw / "partial.json").write_text(json.dumps(run, indent=1) + "\n")
        print(f"bench: FAILED: {e}\n(raw logs and partial.json in {raw})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
    run["seconds"] = round(time.monotonic() - t0, 1)
    return _write(run, args.out, raw)


def _keep(scenarios: list[Any], names: str) -> list[Any]:
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    return [s for s in scenarios if not wanted or s.name in wanted]


def _run_suites(run: dict[str, Any], procs: Processes, st: Any, suites: set[str], args: argparse.Namespace) -> None:
    if suites & {"native", "modes"}:
        print("native backend", file=sys.stderr)
        native = stacks.native(procs, st, with_ukproxy=not args.no_ukproxy)
        if "native" in suites:
            run["records"] += throughput("native", _keep(native, args.scenarios), st, st.connections)
        if "modes" in suites:
            backend = native[0].urls[0].split("//")[1].split("/")[0]
            run["records"] += modes.run(procs, st, backend, stacks.NATIVE_PATH)
        procs.stop_all()
    if "vm" in suites:
        print("unikernel VM pool", file=sys.stderr)
        vm = stacks.vm(procs, st)
        run["records"] += throughput("vm", _keep(vm, args.scenarios), st, st.vm_connections)
        procs.stop_all()
    if "vmfigs" in suites:
        from bench import vm_figures

        print("VM figures", file=sys.stderr)
        run["vm_figures"] = vm_figures.run(procs, st, run["records"])
        procs.stop_all()


def _write(run: dict[str, Any], out: Path, raw: Path) -> int:
    from bench import plots  # matplotlib takes a second to import: only a run that got this far needs it

    plots_written = plots.write_all(run, out)
    run["plots"] = [p.name for p in plots_written]
    (out / "latest.json").write_text(json.dumps(run, indent=1) + "\n")
    md = report.render(run)
    (out / "latest.md").write_text(md)
    print(md)
    print(f"bench: wrote {out / 'latest.md'}, {out / 'latest.json'}, {len(plots_written)} plots "
          f"(raw logs in {raw}) in {run['seconds']} s", file=sys.stderr)
    errors = sum(r["errors"] for r in run["records"])
    if errors:
        print(f"bench: WARNING: {errors} request errors; the figures marked ⚠ include them", file=sys.stderr)
        return 1
    return 0
