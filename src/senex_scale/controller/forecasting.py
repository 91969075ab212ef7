"""Predictive rules at the edges: their history from the store, and ``senex-scale forecast``.

The forecaster itself is pure (``senex_scale.core.forecast``) and lives in the ``Decider``,
which teaches it each tick's demand as it decides. What it learned before this process
started (or while this controller stood by) is in the store: every tick the leader records
each rule's value, and a predictive rule's value is its demand in instances. ``prime`` feeds
that history to the forecasters that have not seen it, before the tick decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from senex_scale.core.decide import Decider
from senex_scale.core.forecast import Forecaster, SessionClock
from senex_scale.errors import InputError
from senex_scale.policy.models import Policy, PredictiveRule
from senex_scale.store.sql import Store

CAUGHT_UP = 5
"""Intervals: a forecaster that saw a tick more recently than this needs no history."""


def prime(decider: Decider, store: Store, now: float, policy: Policy) -> int:
    """Feed each predictive rule's recorded demand it has not seen; the rows fed."""
    fed = 0
    interval = policy.controller.interval
    for name, forecaster in decider.forecasters.items():
        last = forecaster.last_at
        if last is not None and now - last <= CAUGHT_UP * interval:
            continue
        since = now - policy.controller.retention if last is None else last
        for at, value in store.rule_values(name, since):
            if value is not None and (last is None or at > last) and at < now:
                forecaster.observe(at, value)
                fed += 1
    return fed


# --------------------------------------------------------------------------- the CLI's report


@dataclass
class Bucket:
    """One 15- or 30-minute span of the coming session's forecast."""

    start: float
    mean: float | None
    peak: float | None
    floor: int | None


@dataclass
class ForecastReport:
    """The next session's forecast of one predictive rule (``senex-scale forecast``)."""

    rule: str
    pool: str
    mode: str
    calendar: str
    timezone: str
    session_open: float
    session_close: float
    sessions: int
    min_sessions: int
    mape: float | None
    max_error: float
    margin: float
    lead: float
    buckets: list[Bucket] = field(default_factory=list)

    @property
    def acts(self) -> str:
        """Whether the rule would act, and if not why."""
        if self.mode == "forecast-only":
            return "no: forecast-only"
        if self.sessions < self.min_sessions:
            return f"no: {self.sessions} of {self.min_sessions} sessions learned"
        if self.mape is not None and self.mape > self.max_error:
            return f"no: recent error {self.mape:.0%} above max_error {self.max_error:.0%}"
        return "yes"

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "rule": self.rule,
            "pool": self.pool,
            "mode": self.mode,
            "calendar": self.calendar,
            "session": {"open": self.session_open, "close": self.session_close},
            "sessions_learned": self.sessions,
            "min_sessions": self.min_sessions,
            "mape": self.mape,
            "max_error": self.max_error,
            "margin": self.margin,
            "lead_seconds": self.lead,
            "acts": self.acts,
            "buckets": [
                {"start": b.start, "mean": b.mean, "peak": b.peak, "floor": b.floor}
                for b in self.buckets
            ],
        }

    def local(self, at: float) -> str:
        """``at`` as the exchange's wall-clock time."""
        return datetime.fromtimestamp(at, ZoneInfo(self.timezone)).strftime("%H:%M")


def rule_of(policy: Policy, pool: str) -> PredictiveRule:
    """The pool's first predictive rule (``InputError`` naming the pools that have one)."""
    if pool not in policy.pools:
        raise InputError(f'unknown pool "{pool}"; pools: {", ".join(policy.pools) or "none"}')
    rules = policy.predictive_rules(pool)
    if not rules:
        having = sorted({r.pool for r in policy.rules if isinstance(r, PredictiveRule)})
        hint = f" (pools with one: {', '.join(having)})" if having else ""
        raise InputError(f'pool "{pool}" has no type = "predictive" rule{hint}')
    return rules[0]


def report(
    policy: Policy, store: Store, pool: str, now: float, *, bucket: float = 1800.0
) -> ForecastReport:
    """The coming session's forecast (the one in progress, else the next) for ``pool``."""
    rule = rule_of(policy, pool)
    calendar = policy.exchange(rule)
    clock = SessionClock(calendar)
    forecaster = Forecaster(clock, half_life=rule.half_life, keep=rule.sessions)
    for at, value in store.rule_values(rule.name, now - policy.controller.retention):
        if value is not None:
            forecaster.observe(at, value)
    session = clock.next_open(now)
    if session is None:
        raise InputError(f"calendar {calendar} has no session after now")
    profile = forecaster.profile(session.number)
    out = ForecastReport(
        rule.name,
        pool,
        rule.mode,
        calendar,
        _zone(calendar),
        session.open,
        session.close,
        0 if profile is None else profile.sessions,
        rule.min_sessions,
        forecaster.mape(),
        rule.max_error,
        rule.margin,
        rule.lead_for(policy.pools[pool]),
    )
    start = session.open - 30 * 60.0
    while start < session.close + 30 * 60.0:
        values = [
            v
            for m in range(int(bucket // 60))
            if (v := forecaster.forecast(start + 60.0 * m)) is not None
        ]
        peak = max(values) if values else None
        out.buckets.append(
            Bucket(
                start,
                sum(values) / len(values) if values else None,
                peak,
                None if peak is None else math.ceil(peak * (1 + rule.margin) - 1e-9),
            )
        )
        start += bucket
    return out


def _zone(calendar: str) -> str:
    import warnings

    import exchange_calendars as xc  # lazy: it pulls in pandas

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exchange-calendars trips pandas deprecations
        return str(xc.get_calendar(calendar).tz)
