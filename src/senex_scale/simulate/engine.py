"""The simulation loop: a fake clock, simulated instances, and a controller under test.

Every controller (our policy, the seed's script, the HPA, static, the oracle) runs through the
same loop on the same trace, capacity model and noise::

    for each tick t (the policy's interval):
        instances: starting -> ready once `startup` passed; draining -> gone once `drain` passed
        meter:     demand + serving instances -> metrics (cpu, connections, queue, ...) + SLO
        controller.step(t, metrics, instances) -> desired counts
        apply:     start new instances (lowest free number) or drain the newest ones

Our policy and the HPA baseline are ``PolicyController``s: they feed the metrics as samples
into ``senex_scale.core.Decider`` (the very code the daemon runs) and remember its memory
between ticks, as the daemon does.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from senex_scale.core import Decider, Instance, InstanceState, Memory, Observation, Sample
from senex_scale.policy.models import ActionRule, Policy, TargetRule
from senex_scale.simulate.model import PoolLoad, PoolMeter, SimModel, pool_loads, shared_signals
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
            self.view = Instance(str(self.n), self.state, self.started_at)
        return self.view


@dataclass
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

    def initial(self, pool: str) -> int:
        """Instances at the start of the trace."""
        ...

    def step(
        self, k: int, t: float, pools: dict[str, PoolView], shared: dict[str, float]
    ) -> dict[str, int]:
        """Desired counts for the pools that should change now."""
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
        hours = float(self.running.sum()) * step / 3600.0
        return Score(**{**result.as_dict(), "instance_hours": hours})  # type: ignore[arg-type]


@dataclass
class RunResult:
    """One controller's run over a trace."""

    name: str
    pools: dict[str, PoolRun]
    events: list[tuple[float, str, str]] = field(default_factory=list)
    """(time, pool or rule, what happened) for scale changes and fired actions."""


class PolicyController:
    """Runs a policy through the real decision core, one tick at a time."""

    def __init__(self, name: str, policy: Policy) -> None:
        self.name = name
        self.policy = policy
        self.decider = Decider(policy)
        self.memory = Memory()
        self.history: dict[str, deque[Sample]] = {}
        self.fired: list[tuple[float, str, str]] = []
        self.rules: list[tuple[str, str | None, str | None, bool]] = []
        windows = [policy.controller.gap_bound + policy.controller.stale_bound]
        for rule in policy.rules:
            if not rule.enabled:
                continue
            per_instance = isinstance(rule, TargetRule) and rule.target_type == "average"
            self.rules.append((rule.name, rule.pool, rule.metric.signal, per_instance))
            self.history[rule.name] = deque()
            if isinstance(rule, ActionRule):
                windows.append(rule.when.for_)
            elif not isinstance(rule, TargetRule):
                windows.extend(c.for_ for c in (rule.scale_out, rule.scale_in) if c is not None)
        self.horizon = max(windows) + policy.controller.gap_bound + policy.controller.interval
        self.keep = max(
            [p.scale_out_cooldown for p in policy.pools.values()]
            + [p.scale_in_cooldown for p in policy.pools.values()]
            + [
                lim.period
                for p in policy.pools.values()
                for lim in (*p.scale_out_limits, *p.scale_in_limits)
            ]
            + [0.0]
        )

    def initial(self, pool: str) -> int:
        """Start at the pool's minimum."""
        return self.policy.pools[pool].min

    def step(
        self, k: int, t: float, pools: dict[str, PoolView], shared: dict[str, float]
    ) -> dict[str, int]:
        """Feed this tick's metrics as samples, decide, and remember like the daemon does."""
        cutoff = t - self.horizon
        for name, pool_name, signal, per_instance in self.rules:
            history = self.history[name]
            while history and history[0].at < cutoff:
                history.popleft()
            if signal is None:
                continue  # no simulated signal: the rule sees missing data, as in an outage
            view = pools.get(pool_name) if pool_name is not None else None
            source = view.metrics if view is not None else shared
            if signal not in source:
                continue
            value = source[signal]
            if per_instance and view is not None:
                for inst in view.instances:
                    if inst.state is InstanceState.READY:
                        history.append(Sample(t, value, str(inst.n)))
            else:
                history.append(Sample(t, value))
        instances = {
            name: tuple(i.as_core() for i in view.instances) for name, view in pools.items()
        }
        observation = Observation(instances, self.history, {}, self.memory)
        plan = self.decider.decide(observation, t)
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


def run(
    controller: Controller,
    trace: Trace,
    policy: Policy,
    model: SimModel,
    *,
    immediate_stop: bool = False,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Run ``controller`` over ``trace`` (already on the simulation grid)."""
    step = trace.step
    loads = pool_loads(policy, model, trace)
    rng = np.random.default_rng(model.seed)
    noise = {
        p.name: (rng.standard_normal(len(trace.times)) * p.model.cpu_noise).tolist() for p in loads
    }
    times: list[float] = trace.times.tolist()
    n = len(times)
    meters = {p.name: PoolMeter(p, step) for p in loads}
    instances: dict[str, list[SimInstance]] = {}
    runs: dict[str, PoolRun] = {}
    for load in loads:
        count = controller.initial(load.name)
        instances[load.name] = [
            SimInstance(i + 1, InstanceState.READY, None, times[0]) for i in range(count)
        ]
        runs[load.name] = PoolRun(
            demand=load.demand.astype(np.float64),
            supply=np.zeros(n),
            running=np.zeros(n),
            violation=np.zeros(n, dtype=np.bool_),
        )
    by_name = {p.name: p for p in loads}
    result = RunResult(controller.name, runs)
    supply_rows = {name: [0] * n for name in runs}
    running_rows = {name: [0] * n for name in runs}
    violation_rows = {name: [False] * n for name in runs}
    report_every = max(1, n // 200)
    for k, t in enumerate(times):
        views: dict[str, PoolView] = {}
        for name, pool_instances in instances.items():
            alive = []
            for inst in pool_instances:
                if inst.state is InstanceState.STARTING and inst.ready_at <= t:
                    inst.state = InstanceState.READY
                if inst.state is InstanceState.DRAINING and inst.gone_at <= t:
                    continue
                alive.append(inst)
            instances[name] = alive
            serving = sum(1 for i in alive if i.state is InstanceState.READY)
            metrics, violated = meters[name].tick(k, serving, noise[name][k])
            supply_rows[name][k] = serving
            running_rows[name][k] = len(alive)
            violation_rows[name][k] = violated
            views[name] = PoolView(name, alive, metrics)
        changes = controller.step(k, t, views, shared_signals(loads, k))
        for name, desired in changes.items():
            _apply(instances[name], desired, t, by_name[name], immediate_stop)
            runs[name].actions += 1
            result.events.append((t, name, f"{views[name].running} -> {desired}"))
        if progress is not None and (k % report_every == 0 or k == n - 1):
            progress(k + 1)
    for name, pool_run in runs.items():
        pool_run.supply = np.asarray(supply_rows[name], dtype=np.float64)
        pool_run.running = np.asarray(running_rows[name], dtype=np.float64)
        pool_run.violation = np.asarray(violation_rows[name], dtype=np.bool_)
    if isinstance(controller, PolicyController):
        result.events.extend(controller.fired)
        result.events.sort()
    return result


def _apply(
    pool: list[SimInstance], desired: int, t: float, load: PoolLoad, immediate: bool
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
            pool.append(SimInstance(n, InstanceState.STARTING, t, t + load.model.startup))
    elif desired < len(running):
        # all simulated instances carry equal load: the newest is the least loaded (fewest sessions)
        victims = sorted(running, key=lambda i: (i.state is InstanceState.READY, -i.n))
        for inst in victims[: len(running) - desired]:
            inst.state = InstanceState.DRAINING
            inst.gone_at = t if immediate else t + load.model.drain
            if immediate:
                pool.remove(inst)
