"""``senex-scale simulate``: one trace, one policy, the chosen baselines, one score table."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from senex_scale.errors import InputError
from senex_scale.policy.durations import format_duration
from senex_scale.policy.models import Policy, PredictiveRule
from senex_scale.simulate.baselines import (
    BASELINES,
    OracleController,
    SeedScriptController,
    StaticController,
    hpa_policy,
)
from senex_scale.simulate.engine import Controller, FixedSupply, PolicyController, RunResult, run
from senex_scale.simulate.model import MetricFaults, SimModel
from senex_scale.simulate.score import FIELDS, Score
from senex_scale.simulate.trace import Trace

POLICY = "policy"


@dataclass
class Simulation:
    """Everything one ``simulate`` run produced."""

    trace: Trace
    policy: Policy
    model: SimModel
    runs: dict[str, RunResult]
    scores: dict[str, dict[str, Score]] = field(default_factory=dict)
    unsimulated: list[str] = field(default_factory=list)
    """Rules whose metric has no simulated signal (they see missing data)."""

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "trace": self.trace.name,
            "start": self.trace.start,
            "end": self.trace.end,
            "step_seconds": self.trace.step,
            "ticks": len(self.trace.times),
            "unsimulated_rules": self.unsimulated,
            "results": {
                name: {pool: s.as_dict() for pool, s in pools.items()}
                for name, pools in self.scores.items()
            },
            "events": {
                name: [{"at": at, "what": who, "detail": what} for at, who, what in r.events]
                for name, r in self.runs.items()
            },
        }


def parse_compare(text: str) -> list[str]:
    """``"seed-script,hpa"`` -> names, checked against the known baselines."""
    from senex_scale.plugins import did_you_mean

    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in BASELINES:
            raise InputError(
                f'--compare: unknown baseline "{name}"{did_you_mean(name, BASELINES)}; '
                f"known: {', '.join(BASELINES)}"
            )
    return names


PARALLEL_TICKS = 40_000
"""Below this many ticks, starting worker processes costs more than running in one."""

_progress: Any = None  # in a worker process: the shared array of ticks done per controller


SPLIT = (POLICY, "hpa")
"""Controllers run through the core: in parallel runs, each of their pools is its own task."""


def _only(policy: Policy, pool: str, first: bool) -> Policy:
    """``policy`` reduced to one pool: its rules, plus the pool-less action rules if ``first``.

    Every count rule names its pool and a pool's decision reads only its own rules,
    instances, memory and schedules, so the pools of a policy can run apart.
    """
    rules = tuple(r for r in policy.rules if r.pool == pool or (r.pool is None and first))
    return policy.model_copy(update={"pools": {pool: policy.pools[pool]}, "rules": rules})


def acting(policy: Policy) -> Policy:
    """``policy`` without its forecast-only predictive rules, for a simulated run.

    A forecast-only rule learns and reports, and never changes a decision's count (the
    engine's own check: ``tests/unit/simulate/test_predictive_sim.py``, the same events with
    and without it); nothing the simulator reports reads what it adds (reasons, statuses,
    forecasts). It would cost a third of the policy's time (the default's three rules on an
    8-day trace: 10.8 s instead of 7.7 s), so a simulated run leaves it out.
    """
    kept = tuple(r for r in policy.rules if not (isinstance(r, PredictiveRule) and r.mode != "on"))
    if len(kept) == len(policy.rules):
        return policy
    return policy.model_copy(update={"rules": kept})


def _build(
    name: str, policy: Policy, timezone: str, pool: str | None = None
) -> tuple[Controller | FixedSupply, bool]:
    """The controller called ``name`` (on one ``pool`` only, if given) and whether it stops
    instances without a drain."""
    if name in SPLIT:
        rules = acting(policy) if name == POLICY else hpa_policy(policy)
        if pool is not None:
            rules = _only(rules, pool, pool == next(iter(policy.pools)))
        return PolicyController(name, rules), False
    if name == "seed-script":
        return SeedScriptController(policy, timezone), True
    if name == "static":
        return StaticController(policy), False
    return OracleController(policy), False


def _run_one(
    slot: int,
    name: str,
    grid: Trace,
    policy: Policy,
    model: SimModel,
    timezone: str,
    pool: str | None = None,
    faults: MetricFaults | None = None,
) -> RunResult:
    controller, immediate = _build(name, policy, timezone, pool)
    report = None
    if _progress is not None:

        def report(done: int) -> None:
            _progress[slot] = done

    pools = None if pool is None else [pool]
    return run(
        controller,
        grid,
        policy,
        model,
        immediate_stop=immediate,
        progress=report,
        pools=pools,
        faults=faults,
    )


def _init_worker(shared: Any) -> None:
    global _progress
    _progress = shared


MAX_TICKS = 5_000_000
"""Most controller ticks one simulation runs (two years at 15 s); more is a mistyped time."""


def span_problem(span: float, interval: float) -> str:
    """Why a trace covering ``span`` seconds cannot be simulated at ``interval``, or ""."""
    if span < interval:
        return (
            f"its rows cover {format_duration(span)}, less than one controller interval "
            f"({format_duration(interval)}): give rows that span at least one interval"
        )
    if span / interval > MAX_TICKS:
        return (
            f"its rows cover {format_duration(span)}, more than {MAX_TICKS:,} controller "
            f"intervals of {format_duration(interval)} (is a timestamp mistyped?)"
        )
    return ""


def simulate(
    trace: Trace,
    policy: Policy,
    model: SimModel,
    compare: Sequence[str] = BASELINES,
    progress: Callable[[str, int, int], None] | None = None,
    workers: int | None = None,
    faults: MetricFaults | None = None,
) -> Simulation:
    """Run the policy and each baseline over ``trace`` and score them per pool.

    Long traces run the controllers in up to ``workers`` processes (default: one per CPU):
    each run is independent and deterministic, so the result is the one a single process
    gives. Short traces run in this process (starting workers would cost more).
    """
    problem = span_problem(trace.end - trace.start, policy.controller.interval)
    if problem:
        raise InputError(f"trace {trace.name}: {problem}")
    grid = trace.resample(policy.controller.interval)
    timezone = trace.timezone or "America/New_York"
    names = [POLICY, *compare]
    total = len(grid.times)
    count = workers if workers is not None else (os.cpu_count() or 1)
    runs: dict[str, RunResult] = {}
    if count > 1 and total >= PARALLEL_TICKS and len(names) > 1:
        runs = _parallel(names, grid, policy, model, timezone, count, progress, faults)
    else:
        for name in names:
            runs[name] = _run_serial(name, grid, policy, model, timezone, total, progress, faults)
    sim = Simulation(grid, policy, model, {name: runs[name] for name in names})
    sim.scores = {
        name: {pool: pool_run.score(grid.step) for pool, pool_run in result.pools.items()}
        for name, result in sim.runs.items()
    }
    sim.unsimulated = [r.name for r in policy.rules if r.enabled and r.metric.signal is None]
    return sim


def _run_serial(
    name: str,
    grid: Trace,
    policy: Policy,
    model: SimModel,
    timezone: str,
    total: int,
    progress: Callable[[str, int, int], None] | None,
    faults: MetricFaults | None = None,
) -> RunResult:
    controller, immediate = _build(name, policy, timezone)
    report = None
    if progress is not None:

        def report(done: int) -> None:
            progress(name, done, total)

    return run(
        controller, grid, policy, model, immediate_stop=immediate, progress=report, faults=faults
    )


def _parallel(
    names: list[str],
    grid: Trace,
    policy: Policy,
    model: SimModel,
    timezone: str,
    workers: int,
    progress: Callable[[str, int, int], None] | None,
    faults: MetricFaults | None = None,
) -> dict[str, RunResult]:
    """Run each controller (each pool of the policy and the HPA) in a worker process; poll
    their shared tick counters for progress. The longest tasks go first."""
    tasks = [
        (name, pool)
        for name in names
        for pool in (list(policy.pools) if name in SPLIT and len(policy.pools) > 1 else [None])
    ]
    order = sorted(range(len(tasks)), key=lambda i: tasks[i][0] not in SPLIT)
    context = multiprocessing.get_context("spawn")
    shared = context.Array("q", len(tasks), lock=False)
    total = len(grid.times)

    def report() -> None:
        if progress is not None:
            for name in names:
                slots = [i for i, task in enumerate(tasks) if task[0] == name]
                progress(name, sum(int(shared[i]) for i in slots) // len(slots), total)

    with ProcessPoolExecutor(
        workers, context, initializer=_init_worker, initargs=(shared,)
    ) as executor:
        futures = {
            slot: executor.submit(
                _run_one,
                slot,
                tasks[slot][0],
                grid,
                policy,
                model,
                timezone,
                tasks[slot][1],
                faults,
            )
            for slot in order
        }
        pending = list(futures.values())
        while pending:
            report()
            # wait on the unfinished ones only: with a finished one in the list, FIRST_COMPLETED
            # returns at once and this loop would spin, taking a core from the workers
            wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            pending = [f for f in pending if not f.done()]
        parts = {slot: future.result() for slot, future in futures.items()}
    results: dict[str, RunResult] = {}
    for name in names:
        runs = [parts[i] for i, task in enumerate(tasks) if task[0] == name]
        results[name] = _merge(name, runs)
    if progress is not None:
        for name in names:
            progress(name, total, total)
    return results


def _merge(name: str, runs: Sequence[RunResult]) -> RunResult:
    """One run from its per-pool parts (pools in order, events in time order)."""
    if len(runs) == 1:
        return runs[0]
    pools = {pool: result for run_ in runs for pool, result in run_.pools.items()}
    events = sorted(event for run_ in runs for event in run_.events)
    return RunResult(name, pools, events)


__all__ = ["FIELDS", "POLICY", "Simulation", "parse_compare", "simulate"]
