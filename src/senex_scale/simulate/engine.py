"""The simulation loop: a fake clock, simulated instances, and a controller under test.

Every controller (our policy, the seed's script, the HPA, static, the oracle) runs on the same
trace, capacity model and noise::

    for each tick t the controller acts on (every tick, or every `period` seconds):
        instances: starting -> ready once `startup` passed; draining -> gone once `drain` passed
        meter:     demand + serving instances -> metrics (cpu, connections, queue, ...)
        controller.step(t, metrics, instances) -> desired counts
        apply:     start new instances (lowest free number) or drain the newest ones

Supply is recorded as changes (start, ready, drain, gone) and turned into per-tick arrays at
the end; SLO violations are then computed for all ticks at once by the capacity model. A
controller that acts every 5 minutes (the seed's cron script) therefore costs 1/20 of the
ticks, and one that never acts (static, the oracle) costs no loop at all.

Our policy and the HPA baseline are ``PolicyController``s: they feed the metrics as samples
into ``senex_scale.core.Decider`` (the very code the daemon runs) and keep its memory between
ticks, as the daemon does.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from senex_scale.core import Decider, Instance, InstanceState, Memory, Observation, Sample
from senex_scale.core.steady import Steady
from senex_scale.policy.models import ActionRule, Policy, TargetRule, ThresholdRule
from senex_scale.simulate.model import (
    MetricFaults,
    PoolLoad,
    SimModel,
    faulty,
    pool_loads,
    shared_block,
    shared_signals,
)
from senex_scale.simulate.score import Score, score
from senex_scale.simulate.trace import Trace

Array = npt.NDArray[np.float64]


@dataclass(slots=True)
class SimInstance:
    """One simulated instance."""

    n: int
    state: InstanceState
    started_at: float | None
    ready_at: float
    gone_at: float = math.inf
    view: Instance | None = None

    def as_core(self) -> Instance:
        """The core's view of this instance (cached until the state changes)."""
        if self.view is None or self.view.state is not self.state:
            ready = self.ready_at if self.state is InstanceState.READY else None
            self.view = Instance(str(self.n), self.state, self.started_at, ready)
        return self.view


@dataclass(slots=True)
class PoolView:
    """What a controller sees of one pool at one tick."""

    name: str
    instances: list[SimInstance]
    metrics: dict[str, float]

    @property
    def running(self) -> int:
        """Instances not draining (starting or ready)."""
        return sum(1 for i in self.instances if i.state is not InstanceState.DRAINING)


class Controller(Protocol):
    """Something that decides instance counts in the simulation."""

    name: str
    period: float | None
    """Seconds between its actions (None: every tick)."""

    def initial(self, pool: str, at: float) -> int:
        """Instances at ``at``, the start of the trace."""
        ...

    def step(
        self, k: int, t: float, pools: dict[str, PoolView], shared: dict[str, float]
    ) -> dict[str, int]:
        """Desired counts for the pools that should change now."""
        ...


@runtime_checkable
class FixedSupply(Protocol):
    """A controller whose supply is known in advance (static, oracle): no loop needed."""

    name: str

    def supply(self, load: PoolLoad, times: Array) -> tuple[Array, Array, int]:
        """(serving, running, actions) per tick for one pool."""
        ...


@dataclass
class PoolRun:
    """Per-tick record of one pool under one controller."""

    demand: Array
    supply: Array
    running: Array
    violation: npt.NDArray[np.bool_]
    actions: int = 0

    def score(self, step: float) -> Score:
        """Elasticity scores; instance-hours count every running instance (they all cost)."""
        result = score(
            self.demand, self.supply, step, actions=self.actions, violation=self.violation
        )
        fields = result.as_dict()
        fields["instance_hours"] = float(self.running.sum()) * step / 3600.0
        return Score(**fields)  # type: ignore[arg-type]


@dataclass
class RunResult:
    """One controller's run over a trace."""

    name: str
    pools: dict[str, PoolRun]
    events: list[tuple[float, str, str]] = field(default_factory=list)
    """(time, pool or rule, what happened) for scale changes and fired actions."""


class PolicyController:
    """Runs a policy through the real decision core, one tick at a time."""

    period: float | None = None

    def __init__(
        self, name: str, policy: Policy, *, detail: bool = False, skip: bool | None = None
    ) -> None:
        self.name = name
        self.policy = policy
        self.decider = Decider(policy)
        self.detail = detail
        """Reasons and rule statuses on every tick (``Decider.decide``'s ``detail``): nothing
        the simulator reports reads them, so by default a pool that provably stays as it is
        skips them; the counts are the same either way."""
        self.skip = not detail if skip is None else skip
        """Whether the engine may pass over steady stretches without a tick each
        (``fast_forward``; default: when the detail is off). The counts, events and memory
        are those of deciding every tick (``tests/unit/simulate/test_steady.py``)."""
        self.memory = Memory()
        self.history: dict[str, deque[Sample]] = {}
        self.fired: list[tuple[float, str, str]] = []
        self.rules: list[tuple[deque[Sample], str | None, str | None, bool, str]] = []
        controller = policy.controller
        windows = [0.0]
        for rule in policy.rules:
            if not rule.enabled:
                continue
            per_instance = isinstance(rule, TargetRule) and rule.per_instance
            history: deque[Sample] = deque()
            self.history[rule.name] = history
            self.rules.append((history, rule.pool, rule.metric.signal, per_instance, rule.name))
            if isinstance(rule, ActionRule):
                windows.append(rule.when.for_)
            elif isinstance(rule, ThresholdRule):
                windows.extend(c.for_ for c in (rule.scale_out, rule.scale_in) if c is not None)
        # samples older than the longest window (plus a gap and a tick) can no longer matter
        self.horizon = (
            max(windows) + controller.gap_bound + controller.stale_bound + controller.interval
        )
        self.keep = self.decider.keep
        self.reads_shared = any(
            r.enabled and (r.pool is None or r.pool not in policy.pools) for r in policy.rules
        )
        """Whether a rule reads the stack-wide signals (else the engine need not compute them)."""

    def initial(self, pool: str, at: float) -> int:
        """Start at the pool's minimum."""
        return self.policy.pools[pool].min

    def step(
        self, k: int, t: float, pools: dict[str, PoolView], shared: dict[str, float]
    ) -> dict[str, int]:
        """Feed this tick's metrics as samples, decide, and remember like the daemon does."""
        cutoff = t - self.horizon
        for history, pool_name, signal, per_instance, _ in self.rules:
            while history and history[0].at < cutoff:
                history.popleft()
            if signal is None:
                continue  # no simulated signal: the rule sees missing data, as in an outage
            view = pools.get(pool_name) if pool_name is not None else None
            source = view.metrics if view is not None else shared
            value = source.get(signal)
            if value is None:
                continue
            if per_instance and view is not None:
                for inst in view.instances:
                    if inst.state is InstanceState.READY:
                        history.append(Sample(t, value, str(inst.n)))
            else:
                history.append(Sample(t, value))
        instances = {name: [i.as_core() for i in view.instances] for name, view in pools.items()}
        observation = Observation(instances, self.history, {}, self.memory)
        if self.detail:
            plan = self.decider.decide(observation, t)
        else:
            plan = self.decider.decide(observation, t, detail=False)
        memory = plan.memory
        changes: dict[str, int] = {}
        for decision in plan.decisions:
            if not decision.act:
                continue
            if decision.kind == "scale" and decision.pool is not None:
                changes[decision.pool] = decision.desired
                memory = memory.with_scale(
                    decision.pool, t, decision.current, decision.desired, self.keep
                )
            elif decision.kind == "action" and decision.rule is not None:
                memory = memory.with_action(decision.rule, t)
                self.fired.append((t, decision.rule, decision.reasons[0]))
        self.memory = memory
        return changes

    def steady(self, t: float, pools: dict[str, PoolView]) -> Steady | None:
        """Where the pools stay as they are from ``t`` on (``Decider.steady``), or None."""
        instances = {name: [i.as_core() for i in view.instances] for name, view in pools.items()}
        return self.decider.steady(instances, t)

    def fast_forward(
        self,
        times: list[float],
        steady: Steady,
        pools: dict[str, PoolView],
        metrics: dict[str, dict[str, Array]],
        shared: dict[str, Array],
    ) -> int:
        """Pass over the leading ticks of ``times`` whose values stay inside ``steady``'s
        bands: feed their samples and remember as ``step`` would, decide nothing (every one
        of them would be "no change"). ``metrics``: per pool, each signal's values on those
        ticks; ``shared``: the stack-wide signals'. Returns how many ticks it passed."""
        inside: npt.NDArray[np.bool_] = np.ones(len(times), dtype=bool)
        values: dict[str, Array] = {}
        for _, pool_name, signal, _, name in self.rules:
            band = steady.bands.get(name)
            if band is None or signal is None:
                return 0  # a rule the bands do not cover, or one that sees missing data
            view = pools.get(pool_name) if pool_name is not None else None
            source = metrics.get(view.name) if view is not None else shared
            array = source.get(signal) if source is not None else None
            if array is None:
                return 0
            inside &= (array >= band[0]) & (array <= band[1])
            values[name] = array
        passed = len(times) if inside.all() else int(np.argmin(inside))
        if passed == 0:
            return 0
        last = times[passed - 1]
        cutoff = last - self.horizon
        # the samples step would still hold after the last tick passed, and the ticks the
        # memory needs: only those are turned into Python values
        first = bisect.bisect_left(times, cutoff, 0, passed)
        recent = bisect.bisect_left(times, last - steady.memory, 0, passed)
        base = min(first, recent)
        columns: dict[str, list[float]] = {}
        for history, pool_name, _, per_instance, name in self.rules:
            while history and history[0].at < cutoff:
                history.popleft()
            column = values[name][base:passed].tolist()
            columns[name] = column
            view = pools.get(pool_name) if pool_name is not None else None
            if per_instance and view is not None:
                ids = [str(i.n) for i in view.instances if i.state is InstanceState.READY]
                for j in range(first, passed):
                    t, value = times[j], column[j - base]
                    history.extend(Sample(t, value, inst) for inst in ids)
            else:
                history.extend(Sample(times[j], column[j - base]) for j in range(first, passed))
        ticks = [
            (times[j], {name: column[j - base] for name, column in columns.items()})
            for j in range(recent, passed)
        ]
        instances = {name: [i.as_core() for i in view.instances] for name, view in pools.items()}
        self.memory = self.decider.remember_steady(self.memory, instances, ticks)
        return passed


@dataclass
class _Timeline:
    """Changes of serving and running counts, by tick index; summed into arrays at the end."""

    n: int
    serving: Array
    running: Array

    @classmethod
    def starting_with(cls, n: int, count: int) -> _Timeline:
        serving = np.zeros(n + 1)
        running = np.zeros(n + 1)
        serving[0] = running[0] = count
        return cls(n, serving, running)

    def arrays(self) -> tuple[Array, Array]:
        return np.cumsum(self.serving)[: self.n], np.cumsum(self.running)[: self.n]


def run(
    controller: Controller | FixedSupply,
    trace: Trace,
    policy: Policy,
    model: SimModel,
    *,
    immediate_stop: bool = False,
    progress: Callable[[int], None] | None = None,
    pools: Sequence[str] | None = None,
    faults: MetricFaults | None = None,
) -> RunResult:
    """Run ``controller`` over ``trace`` (already on the simulation grid).

    ``pools``: run only these pools (the others' noise is still drawn, so each pool sees
    the noise it sees in a whole run). Pools are independent under a policy whose rules
    each name their pool, which lets ``simulate`` run them in parallel processes.
    ``faults``: metrics that misbehave (outliers, dropouts, stuck values); the load and the
    scores are unchanged, only what the controller reads.
    """
    loads = pool_loads(policy, model, trace)
    n = len(trace.times)
    if isinstance(controller, FixedSupply):
        runs = {}
        for load in loads:
            if pools is not None and load.name not in pools:
                continue
            serving, running, actions = controller.supply(load, trace.times)
            runs[load.name] = _pool_run(load, serving, running, actions, trace.step)
        if progress is not None:
            progress(n)
        return RunResult(controller.name, runs)
    return _loop(controller, trace, policy, model, loads, immediate_stop, progress, pools, faults)


def _loop(
    controller: Controller,
    trace: Trace,
    policy: Policy,
    model: SimModel,
    every_load: list[PoolLoad],
    immediate_stop: bool,
    progress: Callable[[int], None] | None,
    only: Sequence[str] | None = None,
    faults: MetricFaults | None = None,
) -> RunResult:
    step = trace.step
    times: list[float] = trace.times.tolist()
    grid = trace.times
    n = len(times)
    rng = np.random.default_rng(model.seed)
    noise = {}
    noise_arrays = {}
    for p in every_load:  # drawn for every pool, in order, so a subset sees the same noise
        drawn = rng.standard_normal(n)
        if only is None or p.name in only:
            noise_arrays[p.name] = drawn * p.model.cpu_noise
            noise[p.name] = noise_arrays[p.name].tolist()
    loads = [p for p in every_load if only is None or p.name in only]
    instances: dict[str, list[SimInstance]] = {}
    timelines: dict[str, _Timeline] = {}
    actions = dict.fromkeys((p.name for p in loads), 0)
    for load in loads:
        count = controller.initial(load.name, times[0])
        instances[load.name] = [
            SimInstance(i + 1, InstanceState.READY, None, times[0]) for i in range(count)
        ]
        timelines[load.name] = _Timeline.starting_with(n, count)
    queues = dict.fromkeys((p.name for p in loads), 0.0)
    last_k = dict.fromkeys((p.name for p in loads), -1)
    events: list[tuple[float, str, str]] = []
    every = 1 if controller.period is None else max(1, round(controller.period / step))
    offset = 0
    if controller.period is not None:
        # act at wall-clock multiples of the period (cron's */5), like the real script
        offset = next((k for k in range(min(n, every)) if times[k] % controller.period < step), 0)
    report_every = max(1, n // 200)
    reported = -report_every
    factor, dropped, stuck = faults.masks(times) if faults is not None else ([], [], [])
    reads_shared = getattr(controller, "reads_shared", True)
    frozen: dict[str, dict[str, float]] = {}
    skipper = controller if isinstance(controller, PolicyController) and controller.skip else None
    # ticks whose metrics misbehave: a stretch never crosses one (they are decided one by one)
    misbehave = (
        [j for j in range(n) if factor[j] != 1.0 or dropped[j] or stuck[j]] if faults else []
    )
    stretch, retry, backoff = SKIP_FIRST, 0, 1
    k = offset - every
    while k + every < n:
        k += every
        t = times[k]
        views: dict[str, PoolView] = {}
        for load in loads:
            name = load.name
            alive = []
            for inst in instances[name]:
                if inst.state is InstanceState.STARTING and inst.ready_at <= t:
                    inst.state = InstanceState.READY
                if inst.state is InstanceState.DRAINING and inst.gone_at <= t:
                    continue
                alive.append(inst)
            instances[name] = alive
            serving = sum(1 for i in alive if i.state is InstanceState.READY)
            metrics = _metrics(load, k, serving, noise[name][k], queues, last_k, step)
            if faults is not None:
                if dropped[k]:
                    metrics = {}
                elif stuck[k]:
                    metrics = frozen.get(name, metrics)
                else:
                    if factor[k] != 1.0:
                        metrics = faulty(metrics, factor[k])
                    frozen[name] = metrics
            views[name] = PoolView(name, alive, metrics)
        shared = shared_signals(every_load, k) if reads_shared else _NO_SIGNALS
        changes = controller.step(k, t, views, shared)
        changed = False
        for name, desired in changes.items():
            if desired == views[name].running:
                continue  # nothing to do is not an action
            load = next(p for p in loads if p.name == name)
            events.append((t, name, f"{views[name].running} -> {desired}"))
            _apply(instances[name], desired, t, k, grid, load, immediate_stop, timelines[name])
            actions[name] += 1
            changed = True
        if skipper is not None and not changed and k >= retry and k + 1 < n:
            limit = (
                misbehave[bisect.bisect_right(misbehave, k)]
                if misbehave and misbehave[-1] > k
                else n
            )
            passed = _skip(
                skipper,
                k,
                times,
                loads,
                every_load,
                views,
                noise_arrays,
                queues,
                min(stretch, limit - k - 1),
                step,
                frozen if faults is not None else None,
            )
            if passed:
                last_k.update(dict.fromkeys(queues, k + passed))
                stretch = min(SKIP_LAST, stretch * 2) if passed == stretch else SKIP_FIRST
                backoff = 1
                k += passed
            else:
                stretch = SKIP_FIRST
                retry, backoff = k + backoff, min(SKIP_BACKOFF, backoff * 2)
        if progress is not None and (k - reported >= report_every or k >= n - every):
            progress(min(n, k + 1))
            reported = k
    runs = {}
    for load in loads:
        serving_a, running_a = timelines[load.name].arrays()
        runs[load.name] = _pool_run(load, serving_a, running_a, actions[load.name], step)
    if isinstance(controller, PolicyController):
        events.extend(controller.fired)
        events.sort()
    return RunResult(controller.name, runs, events)


_NO_SIGNALS: dict[str, float] = {}

SKIP_FIRST = 32
"""Ticks a first look ahead covers; it doubles while whole looks stay steady..."""
SKIP_LAST = 4096
"""...up to this many (a day at 15 s is 5760 ticks)."""
SKIP_BACKOFF = 16
"""After a look that passed nothing, the next waits 1, 2, 4 ... up to this many ticks."""


def _skip(
    controller: PolicyController,
    k: int,
    times: list[float],
    loads: list[PoolLoad],
    every_load: list[PoolLoad],
    views: dict[str, PoolView],
    noise: dict[str, Array],
    queues: dict[str, float],
    stretch: int,
    step: float,
    frozen: dict[str, dict[str, float]] | None = None,
) -> int:
    """Pass over the steady ticks after ``k`` (at most ``stretch``): how many it passed.

    Only when every instance is ready: then nothing starts, becomes ready or goes during
    the stretch, and each pool's metrics on its ticks are ``_metrics``'s, computed for the
    whole block at once (``_metric_block``). The worker queues move to the last tick passed,
    and so do the ``frozen`` metrics a stuck source repeats (when the run has faults).
    """
    if stretch <= 0:
        return 0
    for view in views.values():
        for inst in view.instances:
            if inst.state is not InstanceState.READY:
                return 0
    steady = controller.steady(times[k + 1], views)
    if steady is None:
        return 0
    end = min(len(times), k + 1 + stretch, bisect.bisect_left(times, steady.until))
    if end <= k + 1:
        return 0
    blocks: dict[str, dict[str, Array]] = {}
    depths: dict[str, list[float]] = {}
    for load in loads:
        serving = len(views[load.name].instances)
        if serving == 0:
            return 0
        block, depth = _metric_block(
            load, k + 1, end, serving, noise[load.name], queues[load.name], step
        )
        blocks[load.name] = block
        depths[load.name] = depth
    shared = shared_block(every_load, k + 1, end) if controller.reads_shared else {}
    passed = controller.fast_forward(times[k + 1 : end], steady, views, blocks, shared)
    if passed:
        for name, depth in depths.items():
            if depth:
                queues[name] = depth[passed - 1]
        if frozen is not None:
            for name, block in blocks.items():
                frozen[name] = {signal: float(v[passed - 1]) for signal, v in block.items()}
    return passed


def _metric_block(
    load: PoolLoad,
    start: int,
    end: int,
    serving: int,
    noise: Array,
    queue: float,
    step: float,
) -> tuple[dict[str, Array], list[float]]:
    """``_metrics`` for ticks ``start`` to ``end - 1`` with ``serving`` (> 0) instances, all
    at once: the same float operations in the same order, so the same values to the bit.
    Also the worker queue after each tick (empty for a web pool)."""
    m = load.model
    if load.kind == "web":
        util = load.work[start:end] / serving + m.base_cpu / 100
        cpu = np.minimum(100.0, np.maximum(0.0, 100 * util + noise[start:end]))
        metrics = {
            "cpu": cpu,
            "connections": load.ws[start:end] / serving,
            "busy": cpu,
            "requests": load.rps[start:end],
        }
        return metrics, []
    capacity = serving * m.tasks_per_minute
    arrivals = load.arrivals_l
    depth: list[float] = []
    for j in range(start, end):  # Lindley's recursion, tick by tick as _metrics runs it
        queue = max(0.0, queue + (arrivals[j] - capacity) * step / 60.0)
        depth.append(queue)
    queued = np.array(depth)
    rate = load.arrivals[start:end]
    if capacity <= 0:
        busy = np.full(end - start, 100.0)
    else:
        busy = np.where(queued > 0, 100.0, np.minimum(100.0, 100.0 * rate / capacity))
    busy = np.minimum(100.0, np.maximum(0.0, busy + noise[start:end]))
    return {"cpu": busy, "busy": busy, "queue": queued, "tasks": rate}, depth


def _metrics(
    load: PoolLoad,
    k: int,
    serving: int,
    noise: float,
    queues: dict[str, float],
    last_k: dict[str, int],
    step: float,
) -> dict[str, float]:
    """Metrics at tick ``k``; a worker queue advances over the ticks since the last call."""
    m = load.model
    if load.kind == "web":
        ws = load.ws_l[k]
        if serving <= 0:
            return {"cpu": 100.0, "connections": ws, "busy": 100.0, "requests": load.rps_l[k]}
        util = load.work_l[k] / serving + m.base_cpu / 100
        cpu = min(100.0, max(0.0, 100 * util + noise))
        return {"cpu": cpu, "connections": ws / serving, "busy": cpu, "requests": load.rps_l[k]}
    capacity = serving * m.tasks_per_minute
    queue = queues[load.name]
    arrivals = load.arrivals_l
    for j in range(last_k[load.name] + 1, k + 1):
        queue = max(0.0, queue + (arrivals[j] - capacity) * step / 60.0)
    queues[load.name], last_k[load.name] = queue, k
    rate = arrivals[k]
    full = capacity <= 0 or queue > 0
    busy = 100.0 if full else min(100.0, 100.0 * rate / capacity)
    busy = min(100.0, max(0.0, busy + noise))
    return {"cpu": busy, "busy": busy, "queue": queue, "tasks": rate}


def _pool_run(load: PoolLoad, serving: Array, running: Array, actions: int, step: float) -> PoolRun:
    return PoolRun(
        demand=load.demand.astype(np.float64),
        supply=serving,
        running=running,
        violation=load.violations(serving, step),
        actions=actions,
    )


def _apply(
    pool: list[SimInstance],
    desired: int,
    t: float,
    k: int,
    grid: Array,
    load: PoolLoad,
    immediate: bool,
    timeline: _Timeline,
) -> None:
    """Start instances (lowest free numbers) or drain the newest running ones."""
    running = [i for i in pool if i.state is not InstanceState.DRAINING]
    if desired > len(running):
        used = {i.n for i in pool}
        n = 1
        for _ in range(desired - len(running)):
            while n in used:
                n += 1
            used.add(n)
            ready_at = t + load.model.startup
            pool.append(SimInstance(n, InstanceState.STARTING, t, ready_at))
            timeline.running[k + 1] += 1
            # it serves from the first tick at or after ready_at, never before it runs (k + 1)
            timeline.serving[max(k + 1, int(np.searchsorted(grid, ready_at, side="left")))] += 1
    elif desired < len(running):
        # all simulated instances carry equal load: the newest is the least loaded (fewest sessions)
        victims = sorted(running, key=lambda i: (i.state is InstanceState.READY, -i.n))
        for inst in victims[: len(running) - desired]:
            was_ready = inst.state is InstanceState.READY
            inst.state = InstanceState.DRAINING
            inst.gone_at = t if immediate else t + load.model.drain
            if was_ready:
                timeline.serving[k + 1] -= 1
            else:  # stopped before it became ready: cancel its future "ready"
                ready = max(k + 1, int(np.searchsorted(grid, inst.ready_at, side="left")))
                timeline.serving[ready] -= 1
            gone = k + 1 if immediate else int(np.searchsorted(grid, inst.gone_at, side="left"))
            timeline.running[max(gone, k + 1)] -= 1
            if immediate:
                pool.remove(inst)
