"""Filter plugins: each decides whether one CPU can take the request at all, and says why not.

Like kube-scheduler's Filter extension point, a node is feasible only if every filter accepts it; the
scheduler stops at the first filter that rejects a node and records that filter's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from ukproxy.vm.placement.model import AntiAffinity, CpuNode, VmRequest


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a CPU was found infeasible: the filter's name and a short reason such as "full (4/4 VMs)"."""

    cpu: int
    plugin: str
    reason: str


class FilterPlugin(Protocol):
    name: ClassVar[str]

    def reject_reason(self, request: VmRequest, node: CpuNode) -> str | None:
        """None if the node can take the request, else a short human reason."""
        ...


class VmCapacity:
    """A CPU holds at most `max_vms` VMs."""

    name: ClassVar[str] = "VmCapacity"

    def reject_reason(self, request: VmRequest, node: CpuNode) -> str | None:
        if node.vm_count < node.max_vms:
            return None
        return f"full ({node.vm_count}/{node.max_vms} VMs)"


class MemoryFit:
    """The VM's memory must fit in what is left of the CPU's memory budget."""

    name: ClassVar[str] = "MemoryFit"

    def reject_reason(self, request: VmRequest, node: CpuNode) -> str | None:
        free = node.memory_free_mib
        if request.memory_mib <= free:
            return None
        return f"memory ({free} of {node.memory_mib} MiB free, needs {request.memory_mib})"


class RequiredCpuAffinity:
    """Hard node affinity: when the request names CPUs, only those are feasible."""

    name: ClassVar[str] = "RequiredCpuAffinity"

    def reject_reason(self, request: VmRequest, node: CpuNode) -> str | None:
        if request.required_cpus is None or node.cpu in request.required_cpus:
            return None
        return "not in required CPUs"


class RequiredUpstreamAntiAffinity:
    """Required anti-affinity: a CPU already holding a VM of the same upstream is infeasible."""

    name: ClassVar[str] = "RequiredUpstreamAntiAffinity"

    def reject_reason(self, request: VmRequest, node: CpuNode) -> str | None:
        if request.anti_affinity is not AntiAffinity.REQUIRED:
            return None
        if node.count_of(request.upstream) == 0:
            return None
        return f"anti-affinity (holds a VM of {request.upstream})"


# Cheap, static checks first so a rejected node costs little and its reason is the most basic one.
DEFAULT_FILTERS: tuple[FilterPlugin, ...] = (
    RequiredCpuAffinity(),
    VmCapacity(),
    MemoryFit(),
    RequiredUpstreamAntiAffinity(),
)


def first_rejection(filters: tuple[FilterPlugin, ...], request: VmRequest, node: CpuNode) -> Rejection | None:
    """Run the filters in order; the first one that rejects the node gives the reason."""
    for plugin in filters:
        reason = plugin.reject_reason(request, node)
        if reason is not None:
            return Rejection(node.cpu, plugin.name, reason)
    return None
