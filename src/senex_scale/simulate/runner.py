"""``senex-scale simulate``: one trace, one policy, the chosen baselines, one score table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def simulate(
    trace: Trace,
    policy: Policy,
    model: SimModel,
    compare: Sequence[str] = BASELINES,
    progress: Callable[[str, int, int], None] | None = None,
) -> Simulation:
    """Run the policy and each baseline over ``trace`` and score them per pool."""
    grid = trace.resample(policy.controller.interval)
    controllers: list[tuple[Controller | FixedSupply, bool]] = [
        (PolicyController(POLICY, policy), False)
    ]
    for name in compare:
        if name == "seed-script":
            controllers.append(
                (SeedScriptController(policy, trace.timezone or "America/New_York"), True)
            )
        elif name == "hpa":
            controllers.append((PolicyController("hpa", hpa_policy(policy)), False))
        elif name == "static":
            controllers.append((StaticController(policy), False))
        elif name == "oracle":
            controllers.append((OracleController(policy), False))
    total = len(grid.times)
    runs: dict[str, RunResult] = {}
    for controller, immediate in controllers:
        report = None
        if progress is not None:
            name = controller.name

            def report(done: int, name: str = name) -> None:
                progress(name, done, total)

        runs[controller.name] = run(
            controller, grid, policy, model, immediate_stop=immediate, progress=report
        )
    sim = Simulation(grid, policy, model, runs)
    sim.scores = {
        name: {pool: pool_run.score(grid.step) for pool, pool_run in result.pools.items()}
        for name, result in runs.items()
    }
    sim.unsimulated = [r.name for r in policy.rules if r.enabled and r.metric.signal is None]
    return sim


__all__ = ["FIELDS", "POLICY", "Simulation", "parse_compare", "simulate"]
