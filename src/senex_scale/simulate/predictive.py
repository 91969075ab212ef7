"""Scoring predictive rules on multi-session traces: train on the earlier sessions, score the later.

The predictor is trained the only honest way: online. ``Decider.decide`` feeds each tick's
demand to the rule's forecaster as the tick happens and the forecast of a session is made
from the sessions before it, so no tick sees the future. What this module adds is the
measurement (``python -m senex_scale.simulate.predictive --seeds 101-104``):

* ``with_predictive(policy)``: the policy plus one predictive rule per pool (demand from the
  request rate for web pools, the task arrival rate for worker pools), optionally without
  the hand-made pre-open schedules they replace;
* ``measure(policy, trace)``: the policy, the HPA and the oracle on the trace, scored only
  from the first session after the training sessions on (instance-hours, SLO-violation
  minutes) and, per normal open in that span (a full-length session), the seconds any pool
  served less than the oracle in the first five minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from senex_scale.core.forecast import SessionClock
from senex_scale.policy.loading import load_default, load_policy
from senex_scale.policy.models import Policy, PredictiveRule
from senex_scale.simulate.generate import generate
from senex_scale.simulate.model import SimModel
from senex_scale.simulate.runner import POLICY, simulate
from senex_scale.simulate.trace import Trace

OPEN_WINDOW = 300.0
"""Seconds after an open in which no pool may serve less than the oracle (the issue's goal)."""

PRE_OPEN_SCHEDULES = ("open-spike", "before-open")
"""The default policy's hand-made pre-open schedules, which predictive rules replace."""


def predictive_rules(policy: Policy, *, mode: str = "on", **options: Any) -> list[PredictiveRule]:
    """One predictive rule per pool: request rate for web pools, task rate for workers.

    Targets follow the capacity a pool's instance has at the default model's 80 %
    utilisation: 60 requests/s (46 at 77 % after the 3 % idle CPU) and 120 tasks/min (96).
    """
    rules = []
    for name, pool in policy.pools.items():
        web = pool.kind == "web"
        queues = "|".join(pool.queues)
        query = (
            "sum(rate(django_http_requests_total[1m]))"
            if web
            else f'sum(rate(celery_tasks_received_total{{queue=~"{queues}"}}[1m])) * 60'
        )
        spec: dict[str, Any] = {
            "name": f"{name}-forecast",
            "type": "predictive",
            "pool": name,
            "metric": {
                "source": next(iter(policy.sources), "prom"),
                "query": query,
                "signal": "requests" if web else "tasks",
                "aggregate": "sum",
            },
            "target": 46.0 if web else 96.0,
            "mode": mode,
            "priority": pool.priority.value,
        }
        spec.update(options)
        rules.append(PredictiveRule.model_validate(spec))
    return rules


def with_predictive(
    policy: Policy, *, mode: str = "on", drop_schedules: bool = True, **options: Any
) -> Policy:
    """``policy`` with ``predictive_rules`` instead of its own predictive rules (the default
    has one per pool, forecast-only, under the same names); without the pre-open schedules
    if asked."""
    schedules = tuple(
        s for s in policy.schedules if not (drop_schedules and s.name in PRE_OPEN_SCHEDULES)
    )
    own = tuple(r for r in policy.rules if not isinstance(r, PredictiveRule))
    rules = (*own, *predictive_rules(policy, mode=mode, **options))
    return policy.model_copy(update={"rules": rules, "schedules": schedules})


@dataclass
class Measured:
    """One controller on one trace, over the scored span."""

    instance_hours: float
    slo_minutes: float
    open_short_seconds: float
    """Seconds, summed over pools and normal opens, served below the oracle in 5 minutes."""
    opens: int
    by_pool: dict[str, dict[str, float]] = field(default_factory=dict)
    training_open_short_seconds: float = 0.0
    """The same over the training sessions' normal opens (the rule is reactive only there)."""


def scored_span(trace: Trace, calendar: str, skip: int) -> tuple[float, list[tuple[float, bool]]]:
    """Where scoring starts (the window of the ``skip + 1``-th session) and the opens after
    it, each with whether it is a normal (full-length) session."""
    clock = SessionClock(calendar)
    start, end = float(trace.times[0]), float(trace.times[-1])
    first = clock.next_open(start)
    assert first is not None
    sessions = []
    number = first.number
    while number < len(clock.opens) and clock.opens[number] < end:
        if clock.opens[number] >= start:
            sessions.append(clock.session(number))
        number += 1
    if len(sessions) <= skip:
        return end, []
    begin = sessions[skip].open - 90 * 60.0
    normal = max(s.minutes for s in sessions)
    return begin, [(s.open, s.minutes == normal) for s in sessions[skip:]]


def measure(
    policy: Policy,
    trace: Trace,
    model: SimModel | None = None,
    *,
    skip: int = 3,
    calendar: str = "XNYS",
    baselines: Sequence[str] = ("hpa", "oracle"),
) -> dict[str, Measured]:
    """``policy`` and ``baselines`` on ``trace``, scored after ``skip`` training sessions."""
    model = model or SimModel()
    sim = simulate(trace, policy, model, compare=tuple(baselines), workers=1)
    grid = sim.trace
    times = grid.times
    step = grid.step
    begin, opens = scored_span(grid, calendar, skip)
    _, every = scored_span(grid, calendar, 0)
    training = every[: len(every) - len(opens)]
    scored = times >= begin
    out: dict[str, Measured] = {}
    for name, result in sim.runs.items():
        total = Measured(0.0, 0.0, 0.0, sum(1 for _, normal in opens if normal))
        for pool, run in result.pools.items():
            cap = float(policy.pools[pool].max)
            needed = np.minimum(run.demand, cap)
            hours = float(run.running[scored].sum()) * step / 3600.0
            slo = float(run.violation[scored].sum()) * step / 60.0
            short = _short(opens, times, run.supply, needed, step)
            total.training_open_short_seconds += _short(training, times, run.supply, needed, step)
            total.instance_hours += hours
            total.slo_minutes += slo
            total.open_short_seconds += short
            total.by_pool[pool] = {
                "instance_hours": round(hours, 2),
                "slo_minutes": round(slo, 2),
                "open_short_seconds": short,
            }
        out[POLICY if name == POLICY else name] = total
        if name == "oracle":
            # the oracle ignores a pool's min; the same foresight held at each pool's min
            floor = {p: float(policy.pools[p].min) for p in result.pools}
            out["oracle-min"] = Measured(
                sum(
                    float(np.maximum(run.running, floor[p])[scored].sum()) * step / 3600.0
                    for p, run in result.pools.items()
                ),
                total.slo_minutes,
                0.0,
                total.opens,
            )
    return out


def _short(
    opens: Sequence[tuple[float, bool]], times: Any, supply: Any, needed: Any, step: float
) -> float:
    """Seconds served below ``needed`` in the first five minutes after each normal open."""
    short = 0.0
    for at, normal in opens:
        if normal:
            window = (times >= at) & (times < at + OPEN_WINDOW)
            short += float(np.count_nonzero(supply[window] < needed[window])) * step
    return short


def session_trace(seed: int, step: float = 15.0) -> Trace:
    """The ten-session family (``trace generate sessions``) for ``seed``, at ``step``."""
    return generate("ten-sessions", seed=seed, step=step)


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return out


def variant_policy(base: Policy, spec: str) -> Policy:
    """A variant of ``base`` by name: ``default``, or ``on`` / ``forecast-only`` followed by
    ``:key=value`` options (``margin=0.2``, ``lead=3m``, ``schedules=keep``, ``night=drop``)."""
    name, *parts = spec.split(":")
    options: dict[str, Any] = {}
    keep, night = False, True
    for part in parts:
        key, _, value = part.partition("=")
        if key == "schedules":
            keep = value == "keep"
        elif key == "night":
            night = value != "drop"
        elif key in ("margin", "max_error", "half_life"):
            options[key] = float(value)
        elif key == "min_sessions":
            options[key] = int(value)
        else:
            options[key] = value
    policy = base
    if not night:
        schedules = tuple(s for s in policy.schedules if s.name != "night")
        policy = policy.model_copy(update={"schedules": schedules})
    if name == "default":
        return policy
    return with_predictive(policy, mode=name, drop_schedules=not keep, **options)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure variants of the default policy on seeds of the ten-session family (JSON lines)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seeds", default="101-104")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--hpa", action="store_true", help="also run the HPA")
    parser.add_argument("--policy", help="base policy file (default: the built-in one)")
    args = parser.parse_args(argv)
    base = load_default() if args.policy is None else load_policy(args.policy)
    for seed in _seeds(args.seeds):
        trace = session_trace(seed)
        for variant in args.variant or ["on"]:
            policy = variant_policy(base, variant)
            baselines = ("hpa", "oracle") if args.hpa else ("oracle",)
            results = measure(policy, trace, baselines=baselines)
            row: dict[str, Any] = {"seed": seed, "variant": variant}
            row |= {name: asdict(m) for name, m in results.items()}
            print(json.dumps(row), flush=True)
    return 0


def ny_time(at: float) -> str:
    """``at`` as New York wall-clock time (for reports)."""
    return datetime.fromtimestamp(at, ZoneInfo("America/New_York")).strftime("%a %H:%M")


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "Measured",
    "measure",
    "predictive_rules",
    "scored_span",
    "session_trace",
    "with_predictive",
]
