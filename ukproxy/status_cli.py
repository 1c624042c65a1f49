"""`ukproxy status -c FILE`: ask the running master's /status and print it as tables (or --json)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from ukproxy.config import ConfigError, MetricsConfig, load

VM_COLUMNS = (
    ("UPSTREAM", "upstream"), ("WORKER", "worker"), ("CPU", "cpu"), ("ADDRESS", "address"), ("STATE", "state"),
    ("ACTIVE", "active"), ("REQUESTS", "requests"), ("LAST CHECK", "last_check"), ("UPTIME", "uptime"),
)
WORKER_COLUMNS = (
    ("SLOT", "slot"), ("PID", "pid"), ("CPU", "cpu"), ("GEN", "generation"), ("STATE", "state"),
    ("CONNECTIONS", "connections"), ("ACCEPTED", "accepted"), ("UPTIME", "uptime"),
)


def status_url(metrics: MetricsConfig) -> str:
    host = f"[{metrics.host}]" if ":" in metrics.host else metrics.host
    return f"http://{host}:{metrics.port}/status"


def fetch_status(url: str, timeout: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "-"
    if key == "uptime" and isinstance(value, int | float):
        return _duration(value)
    return str(value)


def _last_check(vm: dict[str, Any]) -> str | None:
    """"1.2s ago pass": how long since the VM's last health check, and its result."""
    ago = vm.get("last_health_check")
    if not isinstance(ago, int | float):
        return None
    return f"{_duration(ago)} ago {vm.get('health') or '?'}"


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    cells = [[title for title, _ in columns]]
    cells += [[_cell(row.get(key), key) for _, key in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def render(status: dict[str, Any]) -> str:
    master = status.get("master", {})
    lines = [
        f"ukproxy {status.get('version', '?')}  master {master.get('pid', '?')}  "
        f"generation {master.get('generation', '?')}  up {_duration(master.get('uptime', 0))}",
        f"connections: active {status['active']} (reading {status['reading']}, writing {status['writing']}, "
        f"waiting {status['waiting']})  accepts {status['accepts']}  handled {status['handled']}  "
        f"requests {status['requests']}",
        "",
        f"workers: {len(status['workers'])}",
        table(status["workers"], WORKER_COLUMNS),
        "",
    ]
    vms = status.get("vms") or []
    if isinstance(vms, list) and vms:
        lines += [f"VMs: {len(vms)}", table([vm | {"last_check": _last_check(vm)} for vm in vms], VM_COLUMNS)]
        lines += placements(vms)
    elif isinstance(vms, dict) and "error" in vms:
        lines.append(f"VMs: unavailable ({vms['error']})")
    else:
        lines.append("VMs: none")
    if isinstance(status.get("cluster"), dict):
        from ukproxy.cluster.cli import node_line

        lines += ["", node_line(status["cluster"])]
    return "\n".join(lines)


def placements(vms: list[dict[str, Any]]) -> list[str]:
    """Why each VM went where it went: the scheduler's one-line account (totals per CPU, refusals)."""
    placed = [(vm.get("id", "?"), vm["placement"]) for vm in vms if isinstance(vm.get("placement"), dict)]
    if not placed:
        return []
    return ["", "placement:", *(f"  {vm_id}: {p.get('summary', '?')}" for vm_id, p in placed)]


def print_status(args: argparse.Namespace) -> int:
    try:
        config = load(args.config)
    except ConfigError as e:
        for issue in e.issues:
            print(f"ukproxy: {issue}", file=sys.stderr)
        return 1
    if not config.metrics.enabled:
        print(f"ukproxy: [metrics] is disabled in {args.config}: no /status to ask", file=sys.stderr)
        return 1
    url = status_url(config.metrics)
    try:
        status = fetch_status(url)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        print(f"ukproxy: no status from {url}: {reason} (is the master running?)", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0
