"""PNG plots with matplotlib (Agg): throughput and p99 vs connections, worker spread, boot-time distribution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.summary import cells


def write_all(run: dict[str, Any], out: Path) -> list[Path]:
    written = []
    cs = [c for c in cells(run["records"]) if c.suite == "native" and c.client == "wrk" and not c.mode]
    if len({c.connections for c in cs}) >= 2:
        written += [_vs_connections(cs, out / "throughput.png", "rps", "requests/s", "Throughput vs connections"),
                    _vs_connections(cs, out / "latency.png", "p99_ms", "p99 latency (ms, log)",
                                    "p99 latency vs connections", log=True)]
    written += _percentiles(run, out / "percentiles.png")
    spread = [r for r in run["records"] if r.get("mode")]
    if spread:
        written.append(_spread(spread, out / "spread.png"))
    boot = (run.get("vm_figures") or {}).get("boot")
    if boot:
        written.append(_boot(boot, out / "boot.png"))
    return written


def _vs_connections(cs: list[Any], path: Path, attr: str, ylabel: str, title: str, log: bool = False) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in dict.fromkeys(c.scenario for c in cs):
        pts = sorted((c.connections, getattr(c, attr), c.rps_min, c.rps_max) for c in cs if c.scenario == name)
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], marker="o", label=name)
        if attr == "rps":
            ax.fill_between(xs, [p[2] for p in pts], [p[3] for p in pts], alpha=0.15)
    ax.set_xscale("log", base=2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("wrk connections (keep-alive)")
    ax.set_ylabel(ylabel)
    ax.set_title(title + " (native backend; median, band = min..max)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _percentiles(run: dict[str, Any], path: Path) -> list[Path]:
    """Latency percentiles (wrk, main connection count, first repetition's distribution medians)."""
    conns = run["settings"]["main_connections"]
    rows: dict[str, dict[str, list[float]]] = {}
    for r in run["records"]:
        if r["suite"] == "native" and r["client"] == "wrk" and r["connections"] == conns and not r.get("mode"):
            for p, v in r["percentiles_ms"].items():
                rows.setdefault(r["scenario"], {}).setdefault(p, []).append(v)
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, ps in rows.items():
        keys = sorted(ps, key=float)
        ax.plot([f"p{k}" for k in keys], [sorted(ps[k])[len(ps[k]) // 2] for k in keys], marker="o", label=name)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title(f"Latency percentiles, wrk {conns} connections, native backend (median of runs)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _spread(records: list[dict[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    labels, shares = [], []
    for r in records:
        acc = sorted(r["accepted_per_worker"].values(), reverse=True)
        total = sum(acc) or 1
        labels.append(f"{r['mode']}\nc={r['connections']} #{r['rep']}")
        shares.append([a / total for a in acc])
    width = max(len(s) for s in shares)
    bottom = [0.0] * len(shares)
    for w in range(width):
        vals = [s[w] if w < len(s) else 0 for s in shares]
        ax.bar(range(len(shares)), vals, bottom=bottom, label=f"busiest worker #{w + 1}")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xticks(range(len(shares)), labels, fontsize=6, rotation=60)
    ax.set_ylabel("share of accepted connections")
    ax.set_title("ukproxy tcp: connections per worker")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _boot(boot: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.hist(boot["ready_samples_ms"], bins=20, alpha=0.7, label="exec → ready")
    ax.hist(boot["first_200_samples_ms"], bins=20, alpha=0.7, label="exec → first HTTP 200")
    ax.set_xlabel("ms")
    ax.set_ylabel("boots")
    ax.set_title(f"Unikernel boot under QEMU TCG (n = {boot['n']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
