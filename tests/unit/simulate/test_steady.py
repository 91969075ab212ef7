"""Steady stretches: the engine passes over ticks on which every pool provably stays as it is
(``Decider.steady`` bands, ``PolicyController.fast_forward``), and every count, event, sample
and memory is that of deciding every tick. Checked over a trace of every suite family, for the
default policy, the frozen policy of issue 16's digests and the exact HPA, in one process and
pool by pool as ``simulate`` splits them, and with metrics that misbehave (a stretch stops
before each faulty tick)."""

from __future__ import annotations

from typing import Any

import pytest

from senex_scale.core import Observation
from senex_scale.core.decide import Plan
from senex_scale.policy import load_default
from senex_scale.policy.loading import load_policy
from senex_scale.policy.models import TargetRule
from senex_scale.simulate.baselines import hpa_policy
from senex_scale.simulate.engine import PolicyController, RunResult, run
from senex_scale.simulate.generate import FAMILIES, family_trace
from senex_scale.simulate.model import SimModel
from senex_scale.simulate.runner import _only, acting

from .test_decisions_unchanged import POLICY as FROZEN
from .test_quiet import assert_same_runs


class _Recording:
    """Wraps a Decider: each decided tick's counts and memory, by time."""

    def __init__(self, decider: Any) -> None:
        self.inner = decider
        self.ticks: dict[float, tuple[object, ...]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def decide(self, observation: Observation, now: float, **kwargs: Any) -> Plan:
        plan: Plan = self.inner.decide(observation, now, **kwargs)
        self.ticks[now] = (
            tuple((d.kind, d.pool, d.rule, d.current, d.desired, d.act) for d in plan.decisions),
            _memory(plan.memory),
        )
        return plan


def _memory(memory: Any) -> tuple[object, ...]:
    return (
        tuple(
            (name, m.events, sorted(m.recommendations.items()))
            for name, m in sorted(memory.pools.items())
        ),
        tuple(sorted(memory.actions.items())),
    )


def _run(
    policy: Any, family: str, skip: bool, pool: str | None = None
) -> tuple[RunResult, _Recording, PolicyController]:
    trace, faults = family_trace(family, 3)
    grid = trace.resample(policy.controller.interval)
    if pool is not None:
        policy = _only(policy, pool, pool == next(iter(policy.pools)))
    controller = PolicyController("policy", policy, skip=skip)
    recording = _Recording(controller.decider)
    controller.decider = recording  # type: ignore[assignment]
    pools = None if pool is None else [pool]
    result = run(controller, grid, policy, SimModel(), faults=faults, pools=pools)
    return result, recording, controller


def _policy(which: str) -> Any:
    if which == "default":
        return acting(load_default())
    if which == "frozen":
        return load_policy(FROZEN)
    if which == "thresholds":  # no target rule: only the threshold lines hold a pool above min
        policy = acting(load_default())
        kept = tuple(r for r in policy.rules if not isinstance(r, TargetRule))
        return policy.model_copy(update={"rules": kept})
    return hpa_policy(load_default())


CASES = (
    [("default", f, None) for f in FAMILIES]
    + [(w, f, None) for w in ("frozen", "hpa") for f in ("plateau", "flash-crash", "dst", "normal")]
    + [("thresholds", f, None) for f in ("normal", "plateau")]
    + [(w, "normal", p) for w in ("default", "hpa") for p in ("django", "celery-trading")]
)


@pytest.mark.parametrize(("which", "family", "pool"), CASES)
def test_passing_over_steady_ticks_changes_nothing(
    which: str, family: str, pool: str | None
) -> None:
    policy = _policy(which)
    every, every_ticks, every_controller = _run(policy, family, skip=False, pool=pool)
    fast, fast_ticks, fast_controller = _run(policy, family, skip=True, pool=pool)
    assert_same_runs(every, fast)
    # every tick the fast run decided, it decided as the tick-by-tick run did, from the same
    # memory; and it ends with the same memory and the same samples
    for now, tick in fast_ticks.ticks.items():
        assert tick == every_ticks.ticks[now], now
    assert _memory(fast_controller.memory) == _memory(every_controller.memory)
    assert {k: list(v) for k, v in fast_controller.history.items()} == {
        k: list(v) for k, v in every_controller.history.items()
    }
    # and it means something: most ticks were passed over (65-98 % in these cases)
    passed = 1 - len(fast_ticks.ticks) / len(every_ticks.ticks)
    assert passed > 0.5, passed
