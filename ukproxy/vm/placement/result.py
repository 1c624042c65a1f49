"""What a scheduling decision returns: the chosen CPU with every score behind it, or why nothing fits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ukproxy.vm.placement.filters import Rejection
from ukproxy.vm.placement.model import VmRequest


@dataclass(frozen=True, slots=True)
class NodeScore:
    """One scored CPU: its weighted total and each plugin's raw 0..100 score."""

    cpu: int
    total: int
    by_plugin: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Placement:
    """The decision for one request. Nothing is recorded until `Scheduler.bind` is called with it."""

    request: VmRequest
    cpu: int
    total_score: int
    scores: Mapping[int, NodeScore]
    rejections: Sequence[Rejection]

    def describe(self) -> str:
        """One line for the error log, e.g.
        "web -> cpu 1 (score 362); scored cpu0=262 cpu1=362; cpu2 full (4/4 VMs)".
        """
        scored = " ".join(f"cpu{cpu}={score.total}" for cpu, score in sorted(self.scores.items()))
        parts = [f"{self.request.upstream} -> cpu {self.cpu} (score {self.total_score})", f"scored {scored}"]
        parts += [f"cpu{rejection.cpu} {rejection.reason}" for rejection in self.rejections]
        return "; ".join(parts)


class Unschedulable(Exception):
    """No CPU can take the request. `rejections` says, per CPU, which filter refused it and why."""

    def __init__(self, request: VmRequest, node_count: int, rejections: Sequence[Rejection]) -> None:
        self.request = request
        self.node_count = node_count
        self.rejections = tuple(rejections)
        super().__init__(unschedulable_message(node_count, self.rejections))

    @property
    def reasons_by_cpu(self) -> dict[int, str]:
        return {rejection.cpu: rejection.reason for rejection in self.rejections}


def unschedulable_message(node_count: int, rejections: Sequence[Rejection]) -> str:
    """Kube-style summary of why no CPU fits, e.g.
    "0/2 CPUs available: 1 full (4/4 VMs), 1 memory (12 of 16 MiB free, needs 16)".

    Identical reasons are counted together, the most common first.
    """
    counted = Counter(rejection.reason for rejection in rejections)
    ordered = sorted(counted.items(), key=lambda item: (-item[1], item[0]))
    parts = ", ".join(f"{count} {reason}" for reason, count in ordered)
    head = f"0/{node_count} CPUs available"
    return f"{head}: {parts}" if parts else head
