"""The VM placement scheduler: which CPU a new unikernel VM goes to, in the manner of kube-scheduler.

One cycle for a request: walk the CPUs from a rotating start, run the filters on each until
`max_nodes_to_score` feasible CPUs are found, score those with every weighted score plugin, and pick the
highest total, breaking ties uniformly at random with the injected rng. `schedule` only decides; `bind`
records the VM on its CPU and `release` forgets it. No I/O happens here: loads are fed in by the caller.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ukproxy.vm.placement.filters import DEFAULT_FILTERS, FilterPlugin, Rejection, first_rejection
from ukproxy.vm.placement.model import AntiAffinity, CpuNode, PlacedVm, VmRequest
from ukproxy.vm.placement.result import NodeScore, Placement, Unschedulable
from ukproxy.vm.placement.scores import (
    LeastAllocated,
    LowLoad,
    PreferredUpstreamAffinity,
    PreferredUpstreamAntiAffinity,
    ScorePlugin,
    SpreadUpstream,
    WorkerAffinity,
)

__all__ = [
    "AntiAffinity",
    "BindConflict",
    "CpuNode",
    "NodeScore",
    "PlacedVm",
    "Placement",
    "Rejection",
    "Scheduler",
    "SchedulerConfig",
    "ScoreWeights",
    "Unschedulable",
    "VmRequest",
]


@dataclass(frozen=True, slots=True)
class ScoreWeights:
    """Integer weight of each score plugin; 0 turns a plugin off."""

    least_allocated: int = 1
    low_load: int = 1
    worker_affinity: int = 1
    spread_upstream: int = 2
    preferred_anti_affinity: int = 2
    preferred_affinity: int = 2

    def __post_init__(self) -> None:
        for name, weight in self.plugins_with_names():
            if weight < 0:
                raise ValueError(f"score weight {name} must be >= 0, got {weight}")

    def plugins_with_names(self) -> list[tuple[str, int]]:
        return [
            ("least_allocated", self.least_allocated),
            ("low_load", self.low_load),
            ("worker_affinity", self.worker_affinity),
            ("spread_upstream", self.spread_upstream),
            ("preferred_anti_affinity", self.preferred_anti_affinity),
            ("preferred_affinity", self.preferred_affinity),
        ]

    def weighted_plugins(self) -> list[tuple[ScorePlugin, int]]:
        """The enabled plugins with their weights, in a fixed order."""
        plugins: list[tuple[ScorePlugin, int]] = [
            (LeastAllocated(), self.least_allocated),
            (LowLoad(), self.low_load),
            (WorkerAffinity(), self.worker_affinity),
            (SpreadUpstream(), self.spread_upstream),
            (PreferredUpstreamAntiAffinity(), self.preferred_anti_affinity),
            (PreferredUpstreamAffinity(), self.preferred_affinity),
        ]
        return [(plugin, weight) for plugin, weight in plugins if weight > 0]


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """`max_nodes_to_score` bounds how many feasible CPUs one decision scores (None: all of them)."""

    weights: ScoreWeights = field(default_factory=ScoreWeights)
    max_nodes_to_score: int | None = None

    def __post_init__(self) -> None:
        if self.max_nodes_to_score is not None and self.max_nodes_to_score < 1:
            raise ValueError(f"max_nodes_to_score must be >= 1, got {self.max_nodes_to_score}")


class BindConflict(Exception):
    """A placement can no longer be bound: the VM id is taken or its CPU stopped fitting since `schedule`."""


class Scheduler:
    """Holds the CPUs and the VMs bound to them, and places new VMs."""

    def __init__(
        self,
        nodes: Iterable[CpuNode],
        config: SchedulerConfig | None = None,
        rng: random.Random | None = None,
        filters: Sequence[FilterPlugin] = DEFAULT_FILTERS,
    ) -> None:
        self._config = config or SchedulerConfig()
        self._rng = rng or random.Random()
        self._filters = tuple(filters)
        self._scorers = self._config.weights.weighted_plugins()
        self._nodes: dict[int, CpuNode] = {}
        self._cpu_of_vm: dict[str, int] = {}
        for node in sorted(nodes, key=lambda n: n.cpu):
            if node.cpu in self._nodes:
                raise ValueError(f"cpu {node.cpu} given twice")
            self._nodes[node.cpu] = node
            for vm in node.vms:
                if vm.vm_id in self._cpu_of_vm:
                    raise ValueError(f"vm {vm.vm_id} placed twice")
                self._cpu_of_vm[vm.vm_id] = node.cpu
        # Where the next walk over the CPUs starts, so a bounded search does not always see the same ones.
        self._next_start = 0

    @property
    def config(self) -> SchedulerConfig:
        return self._config

    def snapshot(self) -> tuple[CpuNode, ...]:
        """The CPUs and their VMs as they are now, in CPU order (immutable values)."""
        return tuple(self._nodes.values())

    def cpu_of(self, vm_id: str) -> int:
        return self._cpu_of_vm[vm_id]

    def set_loads(self, loads: Mapping[int, float]) -> None:
        """Take a fresh load sample (e.g. from `sample_cpu_load()`); CPUs not in it keep their last load."""
        for cpu, load in loads.items():
            node = self._nodes.get(cpu)
            if node is not None:
                self._nodes[cpu] = node.with_load(load)

    def schedule(self, request: VmRequest) -> Placement:
        """Decide where the request's VM goes. Records nothing; raises Unschedulable if no CPU fits."""
        feasible, rejections = self._find_feasible(request)
        if not feasible:
            raise Unschedulable(request, len(self._nodes), rejections)
        scores = self._score(request, feasible)
        chosen = self._pick_best(scores)
        return Placement(request, chosen.cpu, chosen.total, scores, tuple(rejections))

    def bind(self, placement: Placement, vm_id: str) -> PlacedVm:
        """Record the VM on the CPU the placement chose, re-checking the filters against current state."""
        if vm_id in self._cpu_of_vm:
            raise BindConflict(f"vm {vm_id} is already bound to cpu {self._cpu_of_vm[vm_id]}")
        node = self._nodes.get(placement.cpu)
        if node is None:
            raise BindConflict(f"cpu {placement.cpu} is not known to the scheduler")
        rejection = first_rejection(self._filters, placement.request, node)
        if rejection is not None:
            raise BindConflict(f"cpu {placement.cpu} no longer fits vm {vm_id}: {rejection.reason}")
        request = placement.request
        vm = PlacedVm(vm_id, request.upstream, request.memory_mib, request.worker)
        self._nodes[node.cpu] = node.with_vm(vm)
        self._cpu_of_vm[vm_id] = node.cpu
        return vm

    def place(self, request: VmRequest, vm_id: str) -> Placement:
        """schedule() then bind(): the usual call when nothing can happen in between."""
        placement = self.schedule(request)
        self.bind(placement, vm_id)
        return placement

    def release(self, vm_id: str) -> PlacedVm:
        """Forget a VM (stopped or dead) and free its slot and memory. KeyError if it is not bound."""
        cpu = self._cpu_of_vm.pop(vm_id)
        node = self._nodes[cpu]
        vm = next(vm for vm in node.vms if vm.vm_id == vm_id)
        self._nodes[cpu] = node.without_vm(vm_id)
        return vm

    def _find_feasible(self, request: VmRequest) -> tuple[list[CpuNode], list[Rejection]]:
        """Filter CPUs from the rotating start until enough are feasible (kube's numFeasibleNodesToFind)."""
        nodes = list(self._nodes.values())
        if not nodes:
            return [], []
        wanted = self._config.max_nodes_to_score or len(nodes)
        feasible: list[CpuNode] = []
        rejections: list[Rejection] = []
        examined = 0
        for step in range(len(nodes)):
            node = nodes[(self._next_start + step) % len(nodes)]
            examined += 1
            rejection = first_rejection(self._filters, request, node)
            if rejection is None:
                feasible.append(node)
                if len(feasible) >= wanted:
                    break
            else:
                rejections.append(rejection)
        self._next_start = (self._next_start + examined) % len(nodes)
        return feasible, rejections

    def _score(self, request: VmRequest, nodes: list[CpuNode]) -> dict[int, NodeScore]:
        by_cpu: dict[int, dict[str, int]] = {node.cpu: {} for node in nodes}
        totals = dict.fromkeys(by_cpu, 0)
        for plugin, weight in self._scorers:
            for cpu, score in plugin.scores(request, nodes).items():
                by_cpu[cpu][plugin.name] = score
                totals[cpu] += weight * score
        # Keep the walk order: tie-breaking iterates it, so it must be reproducible.
        return {node.cpu: NodeScore(node.cpu, totals[node.cpu], by_cpu[node.cpu]) for node in nodes}

    def _pick_best(self, scores: Mapping[int, NodeScore]) -> NodeScore:
        """Highest total; among equal totals each is chosen with equal chance (reservoir sampling)."""
        best: NodeScore | None = None
        ties = 0
        for candidate in scores.values():
            if best is None or candidate.total > best.total:
                best, ties = candidate, 1
            elif candidate.total == best.total:
                ties += 1
                if self._rng.randrange(ties) == 0:
                    best = candidate
        assert best is not None, "called with no scored nodes"
        return best
