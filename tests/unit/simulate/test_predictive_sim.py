"""Predictive rules in the simulator: no peeking, the open covered, the bundled 10 sessions."""

from __future__ import annotations

from datetime import date
from itertools import pairwise

import numpy as np
import pytest

from senex_scale.core.forecast import SessionClock
from senex_scale.policy import Policy, parse_policy
from senex_scale.simulate.engine import PolicyController, run
from senex_scale.simulate.generate import generate
from senex_scale.simulate.model import SimModel
from senex_scale.simulate.predictive import (
    PRE_OPEN_SCHEDULES,
    measure,
    predictive_rules,
    variant_policy,
)
from senex_scale.simulate.trace import Trace, bundled_trace, read_trace

BASE = """
[controller]
interval = "60s"

[sources.sim]
type = "simulated"

[pools.django]
kind = "web"
min = 1
max = 8
warmup = "60s"
scale_in_cooldown = "2m"
scale_in_stabilization = "2m"

[[rules]]
name = "cpu"
type = "target"
pool = "django"
metric = { source = "sim", signal = "cpu" }
target = 75.0
"""

AHEAD = """
[[rules]]
name = "ahead"
type = "predictive"
pool = "django"
metric = { source = "sim", signal = "requests", aggregate = "sum" }
target = 46.0
mode = "%s"
"""


@pytest.fixture(scope="module")
def sessions() -> Trace:
    """The ten-session family, seed 7, at one-minute steps (quick)."""
    return generate("ten-sessions", seed=7, step=60)


def policy(mode: str | None) -> Policy:
    """One web pool with a target rule, and a predictive rule in ``mode`` (None: without)."""
    return parse_policy(BASE + (AHEAD % mode if mode else ""))


def cut(trace: Trace, end: float) -> Trace:
    """``trace`` up to (not including) ``end``."""
    keep = trace.times < end
    return Trace(trace.name, trace.times[keep], {k: v[keep] for k, v in trace.columns.items()})


def events(p: Policy, trace: Trace) -> list[tuple[float, str, str]]:
    """Scale events of ``p`` on ``trace``."""
    return run(PolicyController("policy", p), trace, p, SimModel()).events


def test_no_peeking(sessions: Trace) -> None:
    """Decisions up to day 8 are the same whether the trace ends there or goes on a week."""
    p = policy("on")
    middle = float(sessions.times[0]) + 8 * 86400
    full = [e for e in events(p, sessions) if e[0] < middle - 60]
    short = [e for e in events(p, cut(sessions, middle)) if e[0] < middle - 60]
    assert full == short
    assert len(full) > 20


def test_forecast_only_changes_no_decision(sessions: Trace) -> None:
    """A forecast-only rule records and acts on nothing: the same events as without it."""
    assert events(policy("forecast-only"), sessions) == events(policy(None), sessions)


def test_the_open_is_covered_after_the_training_sessions(sessions: Trace) -> None:
    """Reactive alone is short at the opens; with the rule on, no second short after three
    sessions of training, for a few instance-hours more."""
    reactive = measure(policy(None), sessions, baselines=("oracle",))
    ahead = measure(policy("on"), sessions, baselines=("oracle",))
    assert reactive["policy"].open_short_seconds > 300
    assert ahead["policy"].open_short_seconds == 0
    assert ahead["policy"].opens == 6  # ten sessions, three to learn, the half day is not normal
    hours = ahead["policy"].instance_hours
    assert hours < 1.1 * reactive["policy"].instance_hours
    assert hours < 1.5 * ahead["oracle"].instance_hours


def test_bundled_ten_sessions() -> None:
    """traces/ten-sessions.csv: 10 XNYS sessions, a holiday gap and a half day; regenerable."""
    path = bundled_trace("ten-sessions")
    assert path is not None
    trace = read_trace(path)
    clock = SessionClock("XNYS")
    first = clock.next_open(float(trace.times[0]))
    assert first is not None
    sessions = []
    number = first.number
    while clock.opens[number] < trace.times[-1]:
        sessions.append(clock.session(number))
        number += 1
    assert len(sessions) == 10
    assert sorted({s.minutes for s in sessions}) == [210, 390]
    gaps = [b.open - a.open for a, b in pairwise(sessions)]
    assert max(gaps) == 2 * 86400 + 86400, "Friday to Monday"
    assert 2 * 86400 in gaps, "Wednesday to Friday over Thanksgiving"
    again = generate("ten-sessions", seed=42)
    assert np.array_equal(again.times, trace.times)
    for name, values in again.columns.items():
        assert np.allclose(values, trace.columns[name])


def test_sessions_vary_by_seed() -> None:
    """Each session has its own seeded activity, so the family is not one day repeated."""
    trace = generate("ten-sessions", seed=3, start=date(2026, 11, 16), days=3, step=60)
    day = 1440
    peaks = [float(trace.columns["http_rps"][i * day : (i + 1) * day].max()) for i in range(3)]
    assert len({round(p) for p in peaks}) == 3


def test_variant_policy_adds_one_rule_per_pool() -> None:
    """The measurement's 'on' variant: the default plus a predictive rule per pool, without the
    hand-made pre-open schedules."""
    from senex_scale.policy import load_default

    base = load_default()
    on = variant_policy(base, "on:margin=0.2")
    added = [r for r in on.rules if r not in base.rules]
    assert [r.pool for r in added] == list(base.pools)
    assert all(r.margin == 0.2 for r in predictive_rules(base, margin=0.2))
    kept = {s.name for s in base.schedules} - set(PRE_OPEN_SCHEDULES)
    assert {s.name for s in on.schedules} == kept


def test_the_defaults_forecast_only_rules_are_left_out_of_simulated_runs() -> None:
    """The default's predictive rules are forecast-only: a simulated run leaves them out (they
    change no count, above); rules that act stay, and replacing the default's own rules with
    acting ones (``with_predictive``) leaves one rule per name."""
    from senex_scale.policy import load_default
    from senex_scale.policy.models import PredictiveRule
    from senex_scale.simulate.predictive import with_predictive
    from senex_scale.simulate.runner import acting

    default = load_default()
    shipped = [r for r in default.rules if isinstance(r, PredictiveRule)]
    assert {r.mode for r in shipped} == {"forecast-only"}
    assert len(shipped) == len(default.pools)
    assert not [r for r in acting(default).rules if isinstance(r, PredictiveRule)]
    assert len(acting(default).rules) == len(default.rules) - len(shipped)
    on = with_predictive(default, mode="on")
    names = [r.name for r in on.rules]
    assert len(names) == len(set(names)), names
    kept = [r for r in acting(on).rules if isinstance(r, PredictiveRule)]
    assert sorted(r.name for r in kept) == sorted(r.name for r in shipped)
    assert {r.mode for r in kept} == {"on"}
