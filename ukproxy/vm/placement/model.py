"""What the placement scheduler reasons about: CPUs as nodes, VMs placed on them, requests for a new VM."""

from __future__ import annotations

import enum
from collections.abc import Set as AbstractSet
from dataclasses import dataclass


class AntiAffinity(enum.Enum):
    """How a request wants to keep away from VMs of its own upstream.

    NONE: no wish. PREFERRED: CPUs without a VM of the upstream score higher. REQUIRED: a CPU that already
    holds a VM of the upstream is infeasible, so an upstream gets at most one VM per CPU and a request
    becomes unschedulable once every CPU has one (kube's requiredDuringScheduling pod anti-affinity).
    """

    NONE = "none"
    PREFERRED = "preferred"
    REQUIRED = "required"


@dataclass(frozen=True, slots=True)
class PlacedVm:
    """A VM bound to a CPU: which upstream it serves, its memory and the worker that owns it."""

    vm_id: str
    upstream: str
    memory_mib: int
    worker: int


@dataclass(frozen=True, slots=True)
class CpuNode:
    """One host CPU as the scheduler sees it. Immutable: the scheduler replaces nodes when binding."""

    cpu: int
    max_vms: int
    memory_mib: int
    vms: tuple[PlacedVm, ...] = ()
    load_percent: float = 0.0

    def __post_init__(self) -> None:
        if self.max_vms < 0 or self.memory_mib < 0:
            raise ValueError(f"cpu {self.cpu}: max_vms and memory_mib must be >= 0")

    @property
    def vm_count(self) -> int:
        return len(self.vms)

    @property
    def memory_used_mib(self) -> int:
        return sum(vm.memory_mib for vm in self.vms)

    @property
    def memory_free_mib(self) -> int:
        return self.memory_mib - self.memory_used_mib

    def count_of(self, upstream: str) -> int:
        """How many VMs of this upstream the CPU holds."""
        return sum(1 for vm in self.vms if vm.upstream == upstream)

    def with_vm(self, vm: PlacedVm) -> CpuNode:
        return CpuNode(self.cpu, self.max_vms, self.memory_mib, (*self.vms, vm), self.load_percent)

    def without_vm(self, vm_id: str) -> CpuNode:
        kept = tuple(vm for vm in self.vms if vm.vm_id != vm_id)
        return CpuNode(self.cpu, self.max_vms, self.memory_mib, kept, self.load_percent)

    def with_load(self, load_percent: float) -> CpuNode:
        return CpuNode(self.cpu, self.max_vms, self.memory_mib, self.vms, load_percent)


@dataclass(frozen=True, slots=True)
class VmRequest:
    """A request for one new VM.

    `worker` is the owning worker's index, which is also its CPU (worker i runs on CPU i); placing the VM
    there is preferred, never required. `required_cpus`, when given, is hard node affinity. `near` names
    upstreams whose VMs the new VM would rather share a CPU with (preferred affinity: api near kv).
    """

    upstream: str
    memory_mib: int
    worker: int
    required_cpus: AbstractSet[int] | None = None
    anti_affinity: AntiAffinity = AntiAffinity.NONE
    near: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.memory_mib < 0:
            raise ValueError("memory_mib must be >= 0")
        # Callers may pass a plain set; keep the request hashable and unchangeable.
        if self.required_cpus is not None and not isinstance(self.required_cpus, frozenset):
            object.__setattr__(self, "required_cpus", frozenset(self.required_cpus))
