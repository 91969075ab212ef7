"""The simulator's quiet path: a pool that provably stays as it is skips the reasons and the
rule statuses (``Decider.decide(detail=False)``), and every count and memory is the full
path's. Checked tick by tick over a trace of every suite family (schedules that raise and
lower the minimum, bursts, a flash crash, plateaus near the lines, dropouts, stuck values),
for the default policy, the frozen policy of issue 16's digests and the exact HPA."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from senex_scale.core import Observation
from senex_scale.core.decide import Plan
from senex_scale.policy import load_default
from senex_scale.policy.loading import load_policy
from senex_scale.simulate.baselines import hpa_policy
from senex_scale.simulate.engine import PolicyController, RunResult, run
from senex_scale.simulate.generate import FAMILIES, family_trace
from senex_scale.simulate.model import SimModel
from senex_scale.simulate.runner import acting

from .test_decisions_unchanged import POLICY as FROZEN


class _Recording:
    """Wraps a Decider: each tick's counts and memory, and how many pools took the quiet path."""

    def __init__(self, decider: Any) -> None:
        self.inner = decider
        self.ticks: list[tuple[object, ...]] = []
        self.quiet = 0

    def decide(self, observation: Observation, now: float, **kwargs: Any) -> Plan:
        plan: Plan = self.inner.decide(observation, now, **kwargs)
        self.quiet += sum(1 for d in plan.decisions if d.kind == "scale" and not d.reasons)
        self.ticks.append(
            (
                now,
                tuple(
                    (d.kind, d.pool, d.rule, d.current, d.desired, d.act) for d in plan.decisions
                ),
                tuple(
                    (name, m.events, sorted(m.recommendations.items()))
                    for name, m in sorted(plan.memory.pools.items())
                ),
                tuple(sorted(plan.memory.actions.items())),
            )
        )
        return plan


def _run(policy: Any, family: str, detail: bool) -> tuple[RunResult, _Recording]:
    trace, faults = family_trace(family, 3)
    grid = trace.resample(policy.controller.interval)
    controller = PolicyController("policy", policy, detail=detail, skip=False)
    recording = _Recording(controller.decider)
    controller.decider = recording  # type: ignore[assignment]
    return run(controller, grid, policy, SimModel(), faults=faults), recording


def assert_same_runs(expected: RunResult, got: RunResult) -> None:
    """The same events, and per pool the same actions, supply and running counts."""
    assert got.events == expected.events
    for pool, x in expected.pools.items():
        y = got.pools[pool]
        assert x.actions == y.actions, pool
        assert np.array_equal(x.supply, y.supply), pool
        assert np.array_equal(x.running, y.running), pool


CASES = [("default", f) for f in FAMILIES] + [
    (which, f) for which in ("frozen", "hpa") for f in ("plateau", "flash-crash", "dst", "stuck")
]


@pytest.mark.parametrize(("which", "family"), CASES)
def test_the_quiet_path_changes_no_count_and_no_memory(which: str, family: str) -> None:
    """And the exact HPA (its pools take the lean path on every tick): the same."""
    if which == "default":
        policy = acting(load_default())
    elif which == "frozen":
        policy = load_policy(FROZEN)
    else:
        policy = hpa_policy(load_default())
    full, full_ticks = _run(policy, family, detail=True)
    fast, fast_ticks = _run(policy, family, detail=False)
    assert full_ticks.quiet == 0, "the full path always gives its reasons"
    assert fast_ticks.ticks == full_ticks.ticks
    assert_same_runs(full, fast)
    # the check means something only if the quiet path was taken, and not everywhere
    share = fast_ticks.quiet / (len(fast_ticks.ticks) * len(policy.pools))
    if which == "hpa":
        assert share == 1.0, share  # no reasons on any tick: the lean path every time
        return
    assert 0.2 < share < 1.0, share
