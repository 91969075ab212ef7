"""``senex-scale simulate``: one trace, one policy, the chosen baselines, one score table."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from senex_scale.errors import InputError
from senex_scale.policy.models import Policy
from senex_scale.simulate.baselines import (
    BASELINES,
    OracleController,
    SeedScriptController,
    StaticController,
    hpa_policy,
)
from senex_scale.simulate.engine import Controller, FixedSupply, PolicyController, RunResult, run
from senex_scale.simulate.model import SimModel
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


def _build(name: str, policy: Policy, timezone: str) -> tuple[Controller | FixedSupply, bool]:
    """The controller called ``name`` and whether it stops instances without a drain."""
    if name == POLICY:
        return PolicyController(POLICY, policy), False
    if name == "seed-script":
        return SeedScriptController(policy, timezone), True
    if name == "hpa":
        return PolicyController("hpa", hpa_policy(policy)), False
    if name == "static":
        return StaticController(policy), False
    return OracleController(policy), False


def _run_one(
    slot: int, name: str, grid: Trace, policy: Policy, model: SimModel, timezone: str
) -> RunResult:
    controller, immediate = _build(name, policy, timezone)
    report = None
    if _progress is not None:

        def report(done: int) -> None:
            _progress[slot] = done

    return run(controller, grid, policy, model, immediate_stop=immediate, progress=report)


def _init_worker(shared: Any) -> None:
    global _progress
    _progress = shared


def simulate(
    trace: Trace,
    policy: Policy,
    model: SimModel,
    compare: Sequence[str] = BASELINES,
    progress: Callable[[str, int, int], None] | None = None,
    workers: int | None = None,
) -> Simulation:
    """Run the policy and each baseline over ``trace`` and score them per pool.

    Long traces run the controllers in up to ``workers`` processes (default: one per CPU):
    each run is independent and deterministic, so the result is the one a single process
    gives. Short traces run in this process (starting workers would cost more).
    """
    grid = trace.resample(policy.controller.interval)
    timezone = trace.timezone or "America/New_York"
    names = [POLICY, *compare]
    total = len(grid.times)
    count = workers if workers is not None else (os.cpu_count() or 1)
    runs: dict[str, RunResult] = {}
    if count > 1 and total >= PARALLEL_TICKS and len(names) > 1:
        runs = _parallel(names, grid, policy, model, timezone, count, progress)
    else:
        for name in names:
            runs[name] = _run_serial(name, grid, policy, model, timezone, total, progress)
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
) -> RunResult:
    controller, immediate = _build(name, policy, timezone)
    report = None
    if progress is not None:

        def report(done: int) -> None:
            progress(name, done, total)

    return run(controller, grid, policy, model, immediate_stop=immediate, progress=report)


def _parallel(
    names: list[str],
    grid: Trace,
    policy: Policy,
    model: SimModel,
    timezone: str,
    workers: int,
    progress: Callable[[str, int, int], None] | None,
) -> dict[str, RunResult]:
    """Run each controller in a worker process; poll their shared tick counters for progress."""
    context = multiprocessing.get_context("spawn")
    shared = context.Array("q", len(names), lock=False)
    total = len(grid.times)
    with ProcessPoolExecutor(
        workers, context, initializer=_init_worker, initargs=(shared,)
    ) as pool:
        futures = {
            name: pool.submit(_run_one, slot, name, grid, policy, model, timezone)
            for slot, name in enumerate(names)
        }
        while not all(f.done() for f in futures.values()):
            if progress is not None:
                for slot, name in enumerate(names):
                    progress(name, int(shared[slot]), total)
            wait(list(futures.values()), timeout=0.2, return_when=FIRST_COMPLETED)
        results = {name: future.result() for name, future in futures.items()}
    if progress is not None:
        for name in names:
            progress(name, total, total)
    return results


__all__ = ["FIELDS", "POLICY", "Simulation", "parse_compare", "simulate"]
