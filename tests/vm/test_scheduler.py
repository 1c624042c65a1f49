"""The placement scheduler: filters, scores, weights, ties, bounds, binding, and whole placement runs."""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ukproxy.vm.placement.filters import (
    DEFAULT_FILTERS,
    FilterPlugin,
    MemoryFit,
    RequiredCpuAffinity,
    RequiredUpstreamAntiAffinity,
    VmCapacity,
    first_rejection,
)
from ukproxy.vm.placement.host import host_nodes, sample_cpu_load, usable_cpus
from ukproxy.vm.placement.scores import (
    LeastAllocated,
    LowLoad,
    PreferredUpstreamAntiAffinity,
    ScorePlugin,
    SpreadUpstream,
    WorkerAffinity,
)
from ukproxy.vm.scheduler import (
    AntiAffinity,
    BindConflict,
    CpuNode,
    PlacedVm,
    Scheduler,
    SchedulerConfig,
    ScoreWeights,
    Unschedulable,
    VmRequest,
)

NONE, PREFERRED, REQUIRED = AntiAffinity.NONE, AntiAffinity.PREFERRED, AntiAffinity.REQUIRED
ONLY_ZERO = ScoreWeights(0, 0, 0, 0, 0)


def node(
    cpu: int,
    max_vms: int = 4,
    memory: int = 1024,
    upstreams: Sequence[str] = (),
    vm_memory: int = 64,
    load: float = 0.0,
) -> CpuNode:
    """A CPU already holding one VM per entry of `upstreams`."""
    vms = tuple(PlacedVm(f"cpu{cpu}-vm{i}", up, vm_memory, cpu) for i, up in enumerate(upstreams))
    return CpuNode(cpu, max_vms, memory, vms, load)


def request(
    upstream: str = "web",
    memory: int = 64,
    worker: int = 0,
    required_cpus: set[int] | None = None,
    anti: AntiAffinity = NONE,
) -> VmRequest:
    return VmRequest(upstream, memory, worker, required_cpus, anti)


def weights(**only: int) -> ScoreWeights:
    """Weights with every plugin off except the ones named."""
    return ScoreWeights(**{name: 0 for name, _ in ONLY_ZERO.plugins_with_names()} | only)


# ---------------------------------------------------------------- filters


FILTER_CASES = [
    pytest.param(
        VmCapacity(), request(), node(0, max_vms=4, upstreams=["a"] * 3), None, id="capacity-3of4-fits"
    ),
    pytest.param(
        VmCapacity(), request(), node(0, max_vms=4, upstreams=["a"] * 4), "full (4/4 VMs)", id="capacity-full"
    ),
    pytest.param(VmCapacity(), request(), node(0, max_vms=0), "full (0/0 VMs)", id="capacity-zero-slots"),
    pytest.param(
        MemoryFit(),
        request(memory=16),
        node(0, memory=32, upstreams=["a"], vm_memory=16),
        None,
        id="memory-exact",
    ),
    pytest.param(
        MemoryFit(),
        request(memory=16),
        node(0, memory=16, upstreams=["a"], vm_memory=4),
        "memory (12 of 16 MiB free, needs 16)",
        id="memory-short",
    ),
    pytest.param(RequiredCpuAffinity(), request(), node(0), None, id="cpu-affinity-unset"),
    pytest.param(
        RequiredCpuAffinity(), request(required_cpus={0, 1}), node(1), None, id="cpu-affinity-in-set"
    ),
    pytest.param(
        RequiredCpuAffinity(),
        request(required_cpus={1}),
        node(0),
        "not in required CPUs",
        id="cpu-affinity-out",
    ),
    pytest.param(
        RequiredCpuAffinity(),
        request(required_cpus=set()),
        node(0),
        "not in required CPUs",
        id="cpu-affinity-empty",
    ),
    pytest.param(
        RequiredUpstreamAntiAffinity(),
        request("web", anti=REQUIRED),
        node(0, upstreams=["web"]),
        "anti-affinity (holds a VM of web)",
        id="anti-required-same-upstream",
    ),
    pytest.param(
        RequiredUpstreamAntiAffinity(),
        request("web", anti=REQUIRED),
        node(0, upstreams=["api", "api"]),
        None,
        id="anti-required-other-upstream",
    ),
    pytest.param(
        RequiredUpstreamAntiAffinity(),
        request("web", anti=PREFERRED),
        node(0, upstreams=["web"]),
        None,
        id="anti-preferred-never-filters",
    ),
    pytest.param(
        RequiredUpstreamAntiAffinity(),
        request("web", anti=NONE),
        node(0, upstreams=["web"]),
        None,
        id="anti-none-never-filters",
    ),
]


@pytest.mark.parametrize(("plugin", "req", "cpu_node", "reason"), FILTER_CASES)
def test_filter_accepts_or_rejects_with_reason(
    plugin: FilterPlugin, req: VmRequest, cpu_node: CpuNode, reason: str | None
) -> None:
    assert plugin.reject_reason(req, cpu_node) == reason


def test_first_failing_filter_names_the_node() -> None:
    full_and_short = node(3, max_vms=1, memory=64, upstreams=["web"], vm_memory=64)

    rejection = first_rejection(DEFAULT_FILTERS, request(memory=64), full_and_short)

    assert rejection is not None
    assert (rejection.cpu, rejection.plugin, rejection.reason) == (3, "VmCapacity", "full (1/1 VMs)")
    assert first_rejection(DEFAULT_FILTERS, request(), node(0)) is None


# ---------------------------------------------------------------- score plugins


SCORE_CASES = [
    pytest.param(
        LeastAllocated(),
        request(),
        [node(0), node(1, upstreams="a"), node(2, upstreams="aaa"), node(3, upstreams="aaaa")],
        {0: 100, 1: 75, 2: 25, 3: 0},
        id="least-allocated-quarters",
    ),
    pytest.param(
        LeastAllocated(),
        request(),
        [node(0, max_vms=3, upstreams="a"), node(1, max_vms=0)],
        {0: 66, 1: 0},
        id="least-allocated-uneven-capacity",
    ),
    pytest.param(
        LowLoad(),
        request(),
        [node(0, load=0.0), node(1, load=37.4), node(2, load=100.0), node(3, load=120.0)],
        {0: 100, 1: 63, 2: 0, 3: 0},
        id="low-load",
    ),
    pytest.param(
        WorkerAffinity(), request(worker=1), [node(0), node(1)], {0: 0, 1: 100}, id="worker-affinity"
    ),
    pytest.param(
        WorkerAffinity(), request(worker=7), [node(0), node(1)], {0: 0, 1: 0}, id="worker-affinity-cpu-absent"
    ),
    pytest.param(
        SpreadUpstream(), request("web"), [node(0), node(1)], {0: 100, 1: 100}, id="spread-none-yet"
    ),
    pytest.param(
        SpreadUpstream(),
        request("web"),
        [node(0, upstreams=["web", "web"]), node(1, upstreams=["web"]), node(2)],
        {0: 0, 1: 50, 2: 100},
        id="spread-normalised-min-max",
    ),
    pytest.param(
        SpreadUpstream(),
        request("web"),
        [node(0, upstreams=["web"]), node(1, upstreams=["api", "api", "api"])],
        {0: 0, 1: 100},
        id="spread-ignores-other-upstreams",
    ),
    pytest.param(
        SpreadUpstream(),
        request("web"),
        [node(0, upstreams=["web"]), node(1, upstreams=["web"])],
        {0: 100, 1: 100},
        id="spread-level",
    ),
    pytest.param(
        SpreadUpstream(),
        request("web"),
        [node(0, upstreams=["web"] * 3), node(1, upstreams=["web"] * 2)],
        {0: 0, 1: 100},
        id="spread-one-vm-imbalance-is-full-weight",
    ),
    pytest.param(
        PreferredUpstreamAntiAffinity(),
        request("web", anti=NONE),
        [node(0, upstreams=["web"]), node(1)],
        {0: 0, 1: 0},
        id="anti-score-off-without-wish",
    ),
    pytest.param(
        PreferredUpstreamAntiAffinity(),
        request("web", anti=PREFERRED),
        [node(0, upstreams=["web"]), node(1, upstreams=["api"])],
        {0: 0, 1: 100},
        id="anti-score-preferred",
    ),
]


@pytest.mark.parametrize(("plugin", "req", "nodes", "expected"), SCORE_CASES)
def test_score_plugin_values(
    plugin: ScorePlugin, req: VmRequest, nodes: list[CpuNode], expected: dict[int, int]
) -> None:
    assert plugin.scores(req, nodes) == expected


# ---------------------------------------------------------------- weighted combination


# CPU 0 is the worker's own but 90% busy; CPU 1 is idle.
BUSY_OWN_IDLE_OTHER = [node(0, load=90.0), node(1, load=0.0)]


@pytest.mark.parametrize(
    ("score_weights", "cpu", "totals"),
    [
        pytest.param(
            weights(worker_affinity=1, low_load=1), 0, {0: 110, 1: 100}, id="affinity-outweighs-load"
        ),
        pytest.param(weights(worker_affinity=1, low_load=2), 1, {0: 120, 1: 200}, id="doubled-load-wins"),
        pytest.param(weights(low_load=1), 1, {0: 10, 1: 100}, id="load-only"),
        pytest.param(weights(worker_affinity=3), 0, {0: 300, 1: 0}, id="affinity-only"),
    ],
)
def test_weights_combine_plugin_scores(score_weights: ScoreWeights, cpu: int, totals: dict[int, int]) -> None:
    scheduler = Scheduler(BUSY_OWN_IDLE_OTHER, SchedulerConfig(score_weights), random.Random(0))

    placement = scheduler.schedule(request(worker=0))

    assert placement.cpu == cpu
    assert placement.total_score == totals[cpu]
    assert {c: s.total for c, s in placement.scores.items()} == totals


def test_placement_reports_raw_scores_of_enabled_plugins_only() -> None:
    scheduler = Scheduler(BUSY_OWN_IDLE_OTHER, SchedulerConfig(weights(worker_affinity=1, low_load=2)))

    placement = scheduler.schedule(request(worker=0))

    assert placement.scores[0].by_plugin == {"LowLoad": 10, "WorkerAffinity": 100}
    assert placement.scores[1].by_plugin == {"LowLoad": 100, "WorkerAffinity": 0}


def test_config_refuses_a_negative_weight() -> None:
    with pytest.raises(ValueError, match="low_load"):
        ScoreWeights(low_load=-1)


def test_config_refuses_scoring_no_nodes() -> None:
    with pytest.raises(ValueError, match="max_nodes_to_score"):
        SchedulerConfig(max_nodes_to_score=0)


def test_placement_describes_itself_for_the_log() -> None:
    nodes = [*BUSY_OWN_IDLE_OTHER, node(2, max_vms=0)]
    scheduler = Scheduler(nodes, SchedulerConfig(weights(low_load=1)))

    line = scheduler.schedule(request("web")).describe()

    assert line == "web -> cpu 1 (score 100); scored cpu0=10 cpu1=100; cpu2 full (0/0 VMs)"


# ---------------------------------------------------------------- ties


def tied_cpu(seed: int) -> int:
    nodes = [node(0), node(1), node(2, load=50.0)]  # 0 and 1 tie; 2 is strictly worse
    scheduler = Scheduler(nodes, SchedulerConfig(weights(low_load=1)), random.Random(seed))
    return scheduler.schedule(request()).cpu


def test_ties_are_broken_at_random_across_seeds() -> None:
    chosen = Counter(tied_cpu(seed) for seed in range(200))

    assert set(chosen) == {0, 1}


@pytest.mark.parametrize("seed", [0, 1, 42, 2024])
def test_ties_are_deterministic_for_a_seed(seed: int) -> None:
    def run() -> list[int]:
        scheduler = Scheduler([node(0), node(1)], SchedulerConfig(weights(low_load=1)), random.Random(seed))
        return [scheduler.schedule(request()).cpu for _ in range(20)]

    assert run() == run()


# ---------------------------------------------------------------- required vs preferred


def test_required_cpus_override_the_preferred_worker_cpu() -> None:
    scheduler = Scheduler([node(0), node(1)], SchedulerConfig(weights(worker_affinity=10)))

    placement = scheduler.schedule(request(worker=0, required_cpus={1}))

    assert placement.cpu == 1
    assert [(r.cpu, r.reason) for r in placement.rejections] == [(0, "not in required CPUs")]


@pytest.mark.parametrize(
    ("nodes", "cpu"),
    [
        pytest.param([node(0), node(1)], 1, id="own-cpu-free"),
        pytest.param([node(0), node(1, max_vms=1, upstreams=["a"])], 0, id="own-cpu-full-goes-elsewhere"),
    ],
)
def test_worker_affinity_is_only_a_preference(nodes: list[CpuNode], cpu: int) -> None:
    scheduler = Scheduler(nodes, SchedulerConfig(weights(worker_affinity=1)))

    assert scheduler.schedule(request(worker=1)).cpu == cpu


@pytest.mark.parametrize(
    ("anti", "cpu"),
    [
        pytest.param(NONE, 0, id="none-follows-load"),
        pytest.param(PREFERRED, 1, id="preferred-avoids-own-upstream"),
        pytest.param(REQUIRED, 1, id="required-avoids-own-upstream"),
    ],
)
def test_anti_affinity_moves_away_from_the_upstream(anti: AntiAffinity, cpu: int) -> None:
    # CPU 0 already has a web VM but is idle; CPU 1 is free of web but busier.
    nodes = [node(0, upstreams=["web"], load=0.0), node(1, load=60.0)]
    scheduler = Scheduler(nodes, SchedulerConfig(weights(low_load=1, preferred_anti_affinity=1)))

    assert scheduler.schedule(request("web", anti=anti)).cpu == cpu


EVERY_CPU_HOLDS_WEB = [node(0, upstreams=["web"]), node(1, upstreams=["web"])]


def test_preferred_anti_affinity_still_places_when_every_cpu_holds_the_upstream() -> None:
    assert Scheduler(EVERY_CPU_HOLDS_WEB).schedule(request("web", anti=PREFERRED)).cpu in {0, 1}


def test_required_anti_affinity_refuses_when_every_cpu_holds_the_upstream() -> None:
    expected = r"^0/2 CPUs available: 2 anti-affinity \(holds a VM of web\)$"
    with pytest.raises(Unschedulable, match=expected):
        Scheduler(EVERY_CPU_HOLDS_WEB).schedule(request("web", anti=REQUIRED))


# ---------------------------------------------------------------- unschedulable


@pytest.mark.parametrize(
    ("nodes", "req", "message"),
    [
        pytest.param(
            [node(0, upstreams="aaaa"), node(1, memory=16, upstreams=["a"], vm_memory=4)],
            request(memory=16),
            "0/2 CPUs available: 1 full (4/4 VMs), 1 memory (12 of 16 MiB free, needs 16)",
            id="full-and-memory",
        ),
        pytest.param(
            [node(0, upstreams="aaaa"), node(1, upstreams="aaaa"), node(2)],
            request(required_cpus={0, 1}),
            "0/3 CPUs available: 2 full (4/4 VMs), 1 not in required CPUs",
            id="counted-most-common-first",
        ),
        pytest.param([], request(), "0/0 CPUs available", id="no-cpus"),
    ],
)
def test_unschedulable_explains_every_cpu(nodes: list[CpuNode], req: VmRequest, message: str) -> None:
    scheduler = Scheduler(nodes)

    with pytest.raises(Unschedulable) as caught:
        scheduler.schedule(req)

    assert str(caught.value) == message
    assert set(caught.value.reasons_by_cpu) == {n.cpu for n in nodes}
    assert caught.value.request is req


def test_unschedulable_reasons_by_cpu() -> None:
    scheduler = Scheduler([node(0, upstreams="aaaa"), node(1, memory=16, upstreams=["a"], vm_memory=4)])

    with pytest.raises(Unschedulable) as caught:
        scheduler.schedule(request(memory=16))

    assert caught.value.reasons_by_cpu == {0: "full (4/4 VMs)", 1: "memory (12 of 16 MiB free, needs 16)"}


# ---------------------------------------------------------------- bounded, rotating search


@pytest.mark.parametrize(
    ("nodes", "bound", "scored_per_call"),
    [
        pytest.param([node(c) for c in range(4)], 2, [{0, 1}, {2, 3}, {0, 1}], id="four-free-two-at-a-time"),
        pytest.param(
            [node(0), node(1, max_vms=0), node(2), node(3)],
            2,
            [{0, 2}, {3, 0}, {2, 3}],
            id="infeasible-cpu-is-skipped-but-counted",
        ),
        pytest.param([node(c) for c in range(3)], 1, [{0}, {1}, {2}, {0}], id="one-at-a-time"),
        pytest.param([node(c) for c in range(3)], None, [{0, 1, 2}, {0, 1, 2}], id="unbounded-scores-all"),
        pytest.param([node(c) for c in range(2)], 5, [{0, 1}], id="bound-above-node-count"),
    ],
)
def test_max_nodes_to_score_bounds_and_rotates(
    nodes: list[CpuNode], bound: int | None, scored_per_call: list[set[int]]
) -> None:
    scheduler = Scheduler(nodes, SchedulerConfig(max_nodes_to_score=bound), random.Random(0))

    seen = [set(scheduler.schedule(request()).scores) for _ in scored_per_call]

    assert seen == scored_per_call


def test_bounded_search_still_finds_a_lone_feasible_cpu() -> None:
    nodes = [node(0, max_vms=0), node(1, max_vms=0), node(2, max_vms=0), node(3)]
    scheduler = Scheduler(nodes, SchedulerConfig(max_nodes_to_score=1))

    placement = scheduler.schedule(request())

    assert placement.cpu == 3
    assert {r.cpu for r in placement.rejections} == {0, 1, 2}


# ---------------------------------------------------------------- bind, release, snapshot


def test_bind_records_and_release_frees() -> None:
    scheduler = Scheduler([node(0, max_vms=1, memory=128), node(1, max_vms=0)])

    placement = scheduler.schedule(request("web", memory=100, worker=1))
    bound = scheduler.bind(placement, "vm-a")

    assert bound == PlacedVm("vm-a", "web", 100, 1)
    assert scheduler.cpu_of("vm-a") == 0
    cpu0 = scheduler.snapshot()[0]
    assert (cpu0.vms, cpu0.memory_free_mib) == ((bound,), 28)
    with pytest.raises(Unschedulable, match="full"):
        scheduler.schedule(request())

    assert scheduler.release("vm-a") == bound
    assert scheduler.snapshot()[0].vms == ()
    assert scheduler.place(request(), "vm-b").cpu == 0


def test_snapshot_is_unaffected_by_later_binds() -> None:
    scheduler = Scheduler([node(0)])
    before = scheduler.snapshot()

    scheduler.place(request(), "vm-a")

    assert before[0].vm_count == 0
    assert scheduler.snapshot()[0].vm_count == 1


def test_release_of_unknown_vm_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        Scheduler([node(0)]).release("nope")


def test_bind_refuses_a_taken_id() -> None:
    scheduler = Scheduler([node(0), node(1)])
    scheduler.place(request(), "vm-a")

    with pytest.raises(BindConflict, match="already bound"):
        scheduler.bind(scheduler.schedule(request()), "vm-a")


def test_bind_refuses_a_placement_overtaken_by_another_bind() -> None:
    scheduler = Scheduler([node(0, max_vms=1)])
    first = scheduler.schedule(request())
    second = scheduler.schedule(request())
    scheduler.bind(first, "vm-a")

    with pytest.raises(BindConflict, match="full"):
        scheduler.bind(second, "vm-b")
    assert [vm.vm_id for vm in scheduler.snapshot()[0].vms] == ["vm-a"]


def test_constructor_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="cpu 0"):
        Scheduler([node(0), node(0)])


def test_set_loads_feeds_low_load() -> None:
    scheduler = Scheduler([node(0), node(1)], SchedulerConfig(weights(low_load=1)))

    scheduler.set_loads({0: 80.0, 1: 20.0, 9: 5.0})

    placement = scheduler.schedule(request())
    assert placement.cpu == 1
    assert {c: s.by_plugin["LowLoad"] for c, s in placement.scores.items()} == {0: 20, 1: 80}


# ---------------------------------------------------------------- whole runs


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize(
    "workers",
    [
        pytest.param([0] * 8, id="one-worker-asks"),
        pytest.param([0, 1] * 4, id="workers-alternate"),
        pytest.param([1, 1, 0, 0] * 2, id="workers-in-pairs"),
    ],
)
def test_eight_vms_of_two_upstreams_spread_evenly_over_two_cpus(workers: list[int], seed: int) -> None:
    # Room for all 8 on either CPU, so only scoring can spread them.
    scheduler = Scheduler([node(0, max_vms=8), node(1, max_vms=8)], rng=random.Random(seed))

    for i, worker in enumerate(workers):
        scheduler.place(request(["web", "api"][i % 2], worker=worker), f"vm{i}")

    per_cpu = {n.cpu: Counter(vm.upstream for vm in n.vms) for n in scheduler.snapshot()}
    assert per_cpu == {0: Counter(web=2, api=2), 1: Counter(web=2, api=2)}


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["web", "api", "db"]),
        st.integers(min_value=1, max_value=300),
        st.integers(min_value=0, max_value=2),
        st.sampled_from(list(AntiAffinity)),
        st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(operations=OPERATIONS, seed=st.integers(0, 2**16), bound=st.sampled_from([None, 1, 2]))
def test_any_run_respects_every_filter_and_picks_a_best_score(
    operations: list[tuple[str, int, int, AntiAffinity, bool]], seed: int, bound: int | None
) -> None:
    nodes = [node(0, max_vms=3, memory=512), node(1, max_vms=2, memory=1024), node(2, max_vms=4, memory=256)]
    scheduler = Scheduler(nodes, SchedulerConfig(max_nodes_to_score=bound), random.Random(seed))
    live: list[str] = []

    for i, (upstream, memory, worker, anti, release_one) in enumerate(operations):
        if release_one and live:
            scheduler.release(live.pop(0))
        req = request(upstream, memory, worker, anti=anti)
        before = {n.cpu: n for n in scheduler.snapshot()}
        try:
            placement = scheduler.place(req, f"vm{i}")
        except Unschedulable as refused:
            assert set(refused.reasons_by_cpu) == set(before)
            continue
        live.append(f"vm{i}")
        assert first_rejection(DEFAULT_FILTERS, req, before[placement.cpu]) is None
        assert placement.total_score == max(s.total for s in placement.scores.values())

    for cpu_node in scheduler.snapshot():
        assert cpu_node.vm_count <= cpu_node.max_vms
        assert cpu_node.memory_used_mib <= cpu_node.memory_mib


# ---------------------------------------------------------------- host probes


def test_usable_cpus_is_this_process_affinity() -> None:
    assert usable_cpus() == sorted(os.sched_getaffinity(0))


def test_sample_cpu_load_covers_usable_cpus_in_percent() -> None:
    loads = sample_cpu_load(interval=0.05)

    assert set(usable_cpus()) <= set(loads)
    assert all(0.0 <= load <= 100.0 for load in loads.values())


def test_host_nodes_are_empty_usable_cpus_with_given_loads() -> None:
    cpus = usable_cpus()

    nodes = host_nodes(4, 512, {cpus[0]: 33.0})

    assert [(n.cpu, n.max_vms, n.memory_mib, n.vms) for n in nodes] == [(c, 4, 512, ()) for c in cpus]
    assert nodes[0].load_percent == 33.0
