"""Score plugins: each rates every feasible CPU from 0 (worst) to 100 (best) for one request.

A plugin sees all the nodes being scored at once, because some scores are only meaningful relative to
the others (kube's Score + NormalizeScore in one step). The scheduler weights and sums them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

from ukproxy.vm.placement.model import AntiAffinity, CpuNode, VmRequest

MAX_SCORE = 100


class ScorePlugin(Protocol):
    name: ClassVar[str]

    def scores(self, request: VmRequest, nodes: Sequence[CpuNode]) -> dict[int, int]:
        """Score in 0..MAX_SCORE for each node, keyed by CPU."""
        ...


class LeastAllocated:
    """Prefer CPUs with the most free VM slots relative to their capacity."""

    name: ClassVar[str] = "LeastAllocated"

    def scores(self, request: VmRequest, nodes: Sequence[CpuNode]) -> dict[int, int]:
        return {node.cpu: _free_slots_score(node) for node in nodes}


def _free_slots_score(node: CpuNode) -> int:
    if node.max_vms == 0:
        return 0
    free = max(node.max_vms - node.vm_count, 0)
    return MAX_SCORE * free // node.max_vms


class LowLoad:
    """Prefer idle CPUs: 100 minus the sampled load percent."""

    name: ClassVar[str] = "LowLoad"

    def scores(self, request: VmRequest, nodes: Sequence[CpuNode]) -> dict[int, int]:
        return {node.cpu: _clamp(round(MAX_SCORE - node.load_percent)) for node in nodes}


class WorkerAffinity:
    """Prefer the owning worker's own CPU, so the worker and its VM share a core's caches."""

    name: ClassVar[str] = "WorkerAffinity"

    def scores(self, request: VmRequest, nodes: Sequence[CpuNode]) -> dict[int, int]:
        return {node.cpu: MAX_SCORE if node.cpu == request.worker else 0 for node in nodes}


class SpreadUpstream:
    """Prefer CPUs with fewer VMs of the same upstream, so losing a CPU loses little of one service.

    Normalised min-max over the nodes being scored: the CPU with the fewest gets 100, the one with the
    most gets 0, and all get 100 when they are level. Kube's SelectorSpread divides by the maximum
    instead, but then the pull fades as pools grow (2 vs 1 VMs differ by 50, 9 vs 8 by 11) and the
    worker-affinity preference wins over an imbalance; min-max keeps a one-VM imbalance at full weight.
    """

    name: ClassVar[str] = "SpreadUpstream"

    def scores(self, request: VmRequest, nodes: Sequence[CpuNode]) -> dict[int, int]:
        counts = {node.cpu: node.count_of(request.upstream) for node in nodes}
        most = max(counts.values(), default=0)
        least = min(counts.values(), default=0)
        if most == least:
            return dict.fromkeys(counts, MAX_SCORE)
        return {cpu: MAX_SCORE * (most - count) // (most - least) for cpu, count in counts.items()}


class PreferredUpstreamAntiAffinity:
    """Preferred anti-affinity: 100 on CPUs without a VM of the upstream, 0 on the others.

    Scores nothing (0 everywhere) unless the request asks for anti-affinity, so it only moves the
    decision for requests that want it.
    """

    name: ClassVar[str] = "PreferredUpstreamAntiAffinity"

    def scores(self, request: VmRequest, nodes: Sequence[CpuNode]) -> dict[int, int]:
        if request.anti_affinity is AntiAffinity.NONE:
            return {node.cpu: 0 for node in nodes}
        return {node.cpu: MAX_SCORE if node.count_of(request.upstream) == 0 else 0 for node in nodes}


class PreferredUpstreamAffinity:
    """Preferred affinity: 100 on CPUs holding a VM of an upstream the request wants to be near (api near
    kv: their traffic stays on one core's caches), 0 elsewhere; 0 everywhere when it names none."""

    name: ClassVar[str] = "PreferredUpstreamAffinity"

    def scores(self, request: VmRequest, nodes: Sequence[CpuNode]) -> dict[int, int]:
        return {node.cpu: MAX_SCORE if any(node.count_of(u) for u in request.near) else 0 for node in nodes}


def _clamp(score: int) -> int:
    return min(max(score, 0), MAX_SCORE)
