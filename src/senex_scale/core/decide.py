"""One tick of decisions: rules -> combined desired count -> bounds -> limits, with reasons.

Per pool::

    every rule votes        out (n) | no change | in (n) | abstains | missing data
          |
    combine                 any out: the largest out wins (minus a scale-out cooldown)
                            else all voting rules say in, nothing missing, nothing starting,
                            no cooldown, no rule pushed over its threshold: the largest in
          |
    fallback                every metric missing for `fallback.after`: at least `fallback.count`
    bounds                  min/max, raised or lowered by active schedules
    rate limits             HPA behavior policies (scale-out and scale-in separately)

A pool whose count rules are all ``mode = "hpa"`` target rules is decided by
``senex_scale.core.hpa`` alone (the Kubernetes HPA, exactly): none of the steps above apply
but the schedules' bounds. Beside other rules, the HPA's result is one vote among them.

Every step that changes or holds the number appends a reason. Decisions come out ordered by
priority (critical first), pools before actions of the same priority, then by name.

``Decider`` compiles a policy once (rules per pool, schedule caches); ``decide()`` is the
one-shot form. Neither reads the clock: ``now`` is an argument.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from senex_scale.core import hpa
from senex_scale.core.forecast import Forecaster, SessionClock
from senex_scale.core.limits import scale_in_limit, scale_out_limit, stabilized
from senex_scale.core.schedule import ScheduleWindows
from senex_scale.core.state import Instance, InstanceState, Memory, Observation, PoolMemory, Sample
from senex_scale.core.steady import ANY, Band, Steady, count_band
from senex_scale.core.targets import average_replicas, total_replicas
from senex_scale.core.windows import (
    Memo,
    Streak,
    latest,
    latest_by_instance,
    latest_by_instance_at,
    pool_values,
    sustained,
)
from senex_scale.policy.durations import format_duration
from senex_scale.policy.models import (
    ActionRule,
    Condition,
    Notify,
    Policy,
    Pool,
    PredictiveRule,
    Priority,
    Runbook,
    TargetRule,
    ThresholdRule,
    step_size,
)

Vote = Literal["out", "in", "none", "abstain", "missing"]


class RuleStatus(NamedTuple):
    """How one rule stood at this tick (for the status page, metrics and the audit log).

    A NamedTuple rather than a frozen dataclass: one is made per rule every tick.
    """

    rule: str
    pool: str | None
    value: float | None
    vote: Vote | Literal["fires", "cooldown"]
    held: float
    """Seconds its condition has held (0 when not breaching)."""
    reason: str


class ForecastStatus(NamedTuple):
    """A predictive rule at this tick: the forecast, its error, and whether it acted."""

    rule: str
    pool: str
    mode: str
    """``on`` or ``forecast-only``."""
    demand: float | None
    """Demand now, in instances (what is learned)."""
    forecast: float | None
    """Forecast demand now (None outside a session's window or without history)."""
    ahead: float | None
    """The highest forecast over the coming ``lead``."""
    floor: int | None
    """What the rule holds (or, forecast-only, would hold): ceil(ahead x (1 + margin))."""
    mape: float | None
    """Recent forecast error (0.1 = 10 %)."""
    sessions: int
    """Sessions the forecast is learned from."""
    acting: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON shape for the status snapshot and the API."""
        return self._asdict()


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do about one pool (a count) or one action rule, and why."""

    kind: Literal["scale", "action"]
    pool: str | None
    rule: str | None
    priority: Priority
    current: int
    desired: int
    reasons: tuple[str, ...]
    action: Notify | Runbook | None = None
    min: int | None = None
    max: int | None = None

    @property
    def direction(self) -> Literal["out", "in", "none"]:
        """Which way the count moves."""
        if self.desired > self.current:
            return "out"
        if self.desired < self.current:
            return "in"
        return "none"

    @property
    def act(self) -> bool:
        """True when something must be done (a count change or an action to run)."""
        return self.kind == "action" or self.desired != self.current

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape used by ``plan --json``, the audit log and the status API."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "pool": self.pool,
            "rule": self.rule,
            "priority": self.priority.value,
        }
        if self.kind == "scale":
            out |= {"current": self.current, "desired": self.desired, "direction": self.direction}
            out |= {"min": self.min, "max": self.max}
        out |= {"act": self.act, "reasons": list(self.reasons)}
        if self.action is not None:
            out["action"] = self.action.model_dump(mode="json")
        return out


@dataclass(frozen=True, slots=True)
class Plan:
    """The result of one tick: ordered decisions, rule statuses and the updated memory."""

    decisions: tuple[Decision, ...]
    rules: tuple[RuleStatus, ...]
    memory: Memory
    forecasts: tuple[ForecastStatus, ...] = ()
    """Per predictive rule: its forecast and error (acting or forecast-only)."""

    def for_pool(self, pool: str) -> Decision:
        """The scale decision of ``pool``."""
        for decision in self.decisions:
            if decision.kind == "scale" and decision.pool == pool:
                return decision
        raise KeyError(pool)


@dataclass(slots=True)
class _Vote:
    rule: ThresholdRule | TargetRule
    vote: Vote
    desired: int
    reason: str
    status: RuleStatus
    newest_at: float | None = None


@dataclass(slots=True)
class _Compiled:
    pool: Pool
    rules: tuple[ThresholdRule | TargetRule, ...]
    schedules: tuple[tuple[ScheduleWindows, int | None, int | None, str], ...] = field(default=())
    hpa: tuple[TargetRule, ...] = ()
    """``mode = "hpa"`` rules: together one Kubernetes HPA (the first one's behavior)."""
    predictive: tuple[PredictiveRule, ...] = ()
    """``type = "predictive"`` rules: a floor ahead of the learned session (never a scale-in)."""


def _num(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"


class Decider:
    """A policy compiled for repeated ``decide`` calls (the controller loop, the simulator)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.gap = policy.controller.gap_bound
        self.stale = policy.controller.stale_bound
        windows = [ScheduleWindows(s) for s in policy.schedules]
        self.pools: dict[str, _Compiled] = {}
        for name, pool in policy.pools.items():
            scheds = tuple(
                (w, s.min, s.max, s.name)
                for w, s in zip(windows, policy.schedules, strict=True)
                if name in s.pools
            )
            rules = policy.rules_for(name)
            exact = tuple(r for r in rules if isinstance(r, TargetRule) and r.mode == "hpa")
            others = tuple(r for r in rules if not (isinstance(r, TargetRule) and r.mode == "hpa"))
            self.pools[name] = _Compiled(pool, others, scheds, exact, policy.predictive_rules(name))
        # per predictive rule, what it learned (pure state, like the memo; the controller
        # feeds it the recorded history at start: senex_scale.controller.forecasting)
        self.forecasters: dict[str, Forecaster] = {
            r.name: Forecaster(
                SessionClock(policy.exchange(r)), half_life=r.half_life, keep=r.sessions
            )
            for c in self.pools.values()
            for r in c.predictive
        }
        self._forecasts: list[ForecastStatus] = []
        self.actions = policy.action_rules()
        pools = policy.pools.values()
        fors = [
            c.for_
            for r in policy.rules
            if isinstance(r, ThresholdRule)
            for c in (r.scale_out, r.scale_in)
            if c is not None
        ]
        self.keep = max(
            [0.0, *fors]
            + [p.scale_out_cooldown for p in pools]
            + [p.scale_in_cooldown for p in pools]
            + [p.scale_in_stabilization for p in pools]
            + [lim.period for p in pools for lim in (*p.scale_out_limits, *p.scale_in_limits)]
            + [
                hpa.longest_period(r.behavior.scale_up, r.behavior.scale_down)
                for c in self.pools.values()
                for r in c.hpa
            ]
        )
        """Seconds a scale event must be remembered: cooldowns, rate-limit periods, and the
        longest ``for`` window (threshold windows restart at the last scale change)."""
        # streak memo: lets a repeated caller (the loop, the simulator) skip the backward walk
        self._memo: Memo = {}
        # steady bands per (pool, instances, at its minimum): see ``steady``
        self._bands: dict[tuple[str, int, bool], dict[str, Band] | None] = {}
        # per hpa-mode rule, what does not change between ticks
        self._hpa_conf: dict[str, _HpaConf] = {
            r.name: _HpaConf(
                hpa.Tolerances(
                    down=_first(r.behavior.scale_down.tolerance, r.tolerance.scale_in),
                    up=_first(r.behavior.scale_up.tolerance, r.tolerance.scale_out),
                ),
                "utilization" if r.target_type == "utilization" else "average_value",
                r.metric.signal == "cpu",
                c.pool.warmup if r.uses_warmup else 0.0,
                hpa.windows(r.behavior.scale_up, r.behavior.scale_down),
            )
            for c in self.pools.values()
            for r in c.hpa
        }

    # ------------------------------------------------------------------ public

    def decide(self, observation: Observation, now: float, *, detail: bool = True) -> Plan:
        """Decisions for every pool and action rule at ``now``.

        ``detail=False`` (the simulator, which reads only the counts): a pool that provably
        stays as it is (at its minimum, every instance ready, no rule able to vote out, no
        data missing) gets its "no change" without reasons or rule statuses, the threshold
        windows unread. Every count and the memory are those of the full path
        (``tests/unit/simulate/test_quiet.py``); the live controller keeps the detail.
        """
        decisions: list[Decision] = []
        statuses: list[RuleStatus] = []
        memory = observation.memory
        new_pools: dict[str, PoolMemory] | None = None
        self._forecasts = []
        for name, compiled in self.pools.items():
            quiet = None if detail else self._quiet_pool(name, compiled, observation, now)
            if quiet is None:
                decision, pool_statuses, recs = self._decide_pool(
                    name, compiled, observation, now, detail
                )
            else:
                decision, recs = quiet
                pool_statuses = []
            decisions.append(decision)
            statuses.extend(pool_statuses)
            if recs is not None:
                if new_pools is None:
                    new_pools = dict(memory.pools)
                # built directly: dataclasses.replace inspects the fields on every call
                new_pools[name] = PoolMemory(memory.pool(name).events, recs)
        for rule in self.actions:
            decision_or_none, status = self._decide_action(rule, observation, now)
            statuses.append(status)
            if decision_or_none is not None:
                decisions.append(decision_or_none)
        decisions.sort(
            key=lambda d: (d.priority.rank, d.kind != "scale", d.pool or "", d.rule or "")
        )
        new_memory = memory if new_pools is None else Memory(new_pools, memory.actions)
        return Plan(tuple(decisions), tuple(statuses), new_memory, tuple(self._forecasts))

    def bounds(self, pool: str, now: float) -> tuple[int, int, list[str]]:
        """Effective (min, max) of ``pool`` at ``now`` and the schedules that set them."""
        compiled = self.pools[pool]
        low, high = compiled.pool.min, compiled.pool.max
        notes: list[str] = []
        if not compiled.schedules:
            return low, high, notes
        on = [(lo, hi, n) for w, lo, hi, n in compiled.schedules if w.active(now)]
        mins = [(lo, n) for lo, _, n in on if lo is not None]
        maxs = [(hi, n) for _, hi, n in on if hi is not None]
        if mins:
            value, name = max(mins)
            notes.append(f"schedule {name}: min {low} -> {value}")
            low = value
        if maxs:
            value, name = min(maxs)
            notes.append(f"schedule {name}: max {high} -> {value}")
            high = value
        if low > high:
            notes.append(f"min {low} above max {high}: max raised to {low}")
            high = low
        return low, high, notes

    # ------------------------------------------------------------------ steady stretches

    def steady(self, pools: Mapping[str, Sequence[Instance]], now: float) -> Steady | None:
        """Bands of values within which each of ``pools`` (name -> its instances) stays as
        it is at ``now`` and after, and no action rule fires (``senex_scale.core.steady``);
        None when a pool could change whatever its values.

        A pool is steady when every instance is ready and warm (and past the HPA's CPU
        initialization period), nothing starts or drains, it is within its effective bounds,
        it has no predictive rule, and its rules are either our own or the exact HPA's alone.
        At its minimum, each rule's band is where ``_quiet_pool`` holds (no threshold breaches
        its scale-out line, no target wants more). Above it, no rule may vote at all: no
        threshold breaches either line, every target (and the HPA) wants the current count,
        so no window can fire and the stabilization cannot matter. A tick whose values are
        all inside the bands gets "no change" from ``decide``, as long as it is before
        ``until``.
        """
        bands: dict[str, Band] = {}
        until = math.inf
        window = 0.0
        for name, instances in pools.items():
            got = self._steady_pool(name, instances, now)
            if got is None:
                return None
            pool_bands, pool_until, pool_window = got
            bands.update(pool_bands)
            until = min(until, pool_until)
            window = max(window, pool_window)
        for rule in self.actions:
            bands[rule.name] = _quiet_band(rule.when)
        return Steady(bands, until, window + self.policy.controller.interval)

    def remember_steady(
        self,
        memory: Memory,
        pools: Mapping[str, Sequence[Instance]],
        ticks: Sequence[tuple[float, Mapping[str, float]]],
    ) -> Memory:
        """``memory`` after the steady ``ticks`` (time, value per rule, in order): what
        deciding them one by one leaves. Only the target rules' recent wishes change, so the
        ticks older than ``Steady.memory`` before the last one may be left out."""
        new_pools = dict(memory.pools)
        for name, instances in pools.items():
            compiled = self.pools[name]
            old = memory.pool(name)
            recs = dict(old.recommendations)
            current = len(instances)
            # above the minimum, a steady tick's every recommendation is the current count
            # (its band); at it, only "at most", so each is computed
            known = bool(ticks) and current != self.bounds(name, ticks[0][0])[0]
            if compiled.hpa:
                lead = compiled.hpa[0]
                up_window, down_window = self._hpa_conf[lead.name].windows
                history = recs.get(lead.name, ())
                for now, values in ticks:
                    if known:
                        history = _hpa_history(history, now, current, up_window, down_window)
                        continue
                    proposals = [
                        self._hpa_recommendation(
                            rule,
                            self._synthetic(name, instances, rule, values[rule.name], now),
                            now,
                            instances,
                            current,
                            current,
                        )
                        for rule in compiled.hpa
                    ]
                    combined, error = hpa.combine(current, proposals)
                    if combined is None:
                        raise ValueError(f"pool {name} is not steady: {error}")
                    history = _hpa_history(history, now, combined, up_window, down_window)
                recs[lead.name] = history
            else:
                targets = [r for r in compiled.rules if isinstance(r, TargetRule)]
                if not targets:
                    continue  # the quiet path leaves such a pool's memory untouched
                window = compiled.pool.scale_in_stabilization
                for now, values in ticks:
                    for rule in targets:
                        if known:
                            recs[rule.name] = _remember(
                                recs.get(rule.name, ()), (now, current), window
                            )
                            continue
                        samples = self._synthetic(
                            name, instances, rule, values[rule.name], now
                        ).samples[rule.name]
                        got = self._target_raw(
                            rule, compiled.pool, current, instances, samples, now
                        )
                        if isinstance(got, str):
                            raise ValueError(f"pool {name} is not steady: {got}")
                        recs[rule.name] = _remember(recs.get(rule.name, ()), (now, got[1]), window)
            new_pools[name] = PoolMemory(old.events, recs)
        return Memory(new_pools, memory.actions)

    def _steady_pool(
        self, name: str, instances: Sequence[Instance], now: float
    ) -> tuple[dict[str, Band], float, float] | None:
        """One pool's bands, until when they hold, and its recommendation window; or None."""
        compiled = self.pools[name]
        pool = compiled.pool
        current = len(instances)
        if compiled.predictive or current == 0 or (compiled.hpa and compiled.rules):
            return None
        for inst in instances:
            if not inst.warm(now, pool.warmup):  # also: ready (not starting, not draining)
                return None
            for rule in compiled.hpa:
                started = inst.started_at
                if started is not None and started + rule.readiness.cpu_initialization_period > now:
                    return None  # the HPA's CPU filter still depends on the time
        low, high, _ = self.bounds(name, now)
        until = min((w.until(now) for w, _, _, _ in compiled.schedules), default=math.inf)
        if compiled.hpa:
            if not low <= current <= high:
                return None
            up_window, down_window = self._hpa_conf[compiled.hpa[0].name].windows
            window = max(up_window, down_window)
        else:
            if not low <= current <= high:
                return None
            window = pool.scale_in_stabilization
        key = (name, current, current == low)
        bands = self._bands.get(key)
        if bands is None:
            bands = self._steady_bands(name, compiled, instances, current, current == low, now)
            self._bands[key] = bands
        if bands is None:
            return None
        return bands, until, window

    def _steady_bands(
        self,
        name: str,
        compiled: _Compiled,
        instances: Sequence[Instance],
        current: int,
        at_min: bool,
        now: float,
    ) -> dict[str, Band] | None:
        """The bands of a steady pool with ``current`` instances (the same at any time once
        every instance is ready, warm and initialized; cached by the caller)."""
        bands: dict[str, Band] = {}
        if compiled.hpa:
            for exact in compiled.hpa:

                def wants(v: float, rule: TargetRule = exact) -> int | None:
                    obs = self._synthetic(name, instances, rule, v, now)
                    return self._hpa_recommendation(
                        rule, obs, now, instances, current, current
                    ).replicas

                band = count_band(wants, current, at_min)
                if band is None:
                    return None
                bands[exact.name] = band
            return bands
        for rule in compiled.rules:
            if isinstance(rule, ThresholdRule):
                # at the minimum a scale-in vote changes nothing (``_quiet_pool``); above it,
                # no rule may vote in either (then no vote can move the count)
                out_band = _quiet_band(rule.scale_out)
                in_band = ANY if at_min else _quiet_band(rule.scale_in)
                band = (max(out_band[0], in_band[0]), min(out_band[1], in_band[1]))
                if band[0] > band[1]:
                    return None
                bands[rule.name] = band
                continue

            def raw(v: float, target: TargetRule = rule) -> int | None:
                samples = self._synthetic(name, instances, target, v, now).samples[target.name]
                got = self._target_raw(target, compiled.pool, current, instances, samples, now)
                return None if isinstance(got, str) else got[1]

            wanted = count_band(raw, current, at_min)
            if wanted is None:
                return None
            bands[rule.name] = wanted
        return bands

    @staticmethod
    def _synthetic(
        name: str, instances: Sequence[Instance], rule: TargetRule, value: float, now: float
    ) -> Observation:
        """One tick's observation of ``rule`` with ``value`` (every instance's, if per
        instance), as the simulator feeds it."""
        if rule.per_instance:
            samples = [Sample(now, value, inst.id) for inst in instances]
        else:
            samples = [Sample(now, value)]
        return Observation({name: instances}, {rule.name: samples})

    # ------------------------------------------------------------------ pools

    def _decide_pool(
        self, name: str, compiled: _Compiled, obs: Observation, now: float, detail: bool = True
    ) -> tuple[Decision, list[RuleStatus], Mapping[str, tuple[tuple[float, int], ...]] | None]:
        pool = compiled.pool
        instances = obs.instances.get(name, ())
        active: list[Instance] = []
        starting = 0
        for inst in instances:  # one pass (every pool, every tick)
            state = inst.state
            if state is not InstanceState.DRAINING:
                active.append(inst)
                if state is InstanceState.STARTING:
                    starting += 1
        current = len(active)
        memory = obs.memory.pool(name)
        recs: dict[str, tuple[tuple[float, int], ...]] | None = None

        votes: list[_Vote] = []
        statuses: list[RuleStatus] = []
        hpa_vote: _Vote | None = None
        if compiled.hpa:
            # without the detail, a pool run by the HPA alone skips its texts on every tick
            lean = not detail and not compiled.rules
            outcome = self._hpa(name, compiled, obs, now, instances, current, memory, not lean)
            statuses.extend(outcome.statuses)
            if outcome.recommendations is not None:
                recs = dict(memory.recommendations)
                recs[compiled.hpa[0].name] = outcome.recommendations
            if not compiled.rules:
                desired, priority = outcome.desired, outcome.priority
                reasons = [] if lean else list(outcome.reasons)
                for ahead in compiled.predictive:  # a floor on the HPA's count, within max
                    floor, status = self._predict(ahead, pool, active, obs, now)
                    statuses.append(status)
                    reasons.append(status.reason)
                    if floor is not None and min(floor, outcome.high) > desired:
                        raised = min(floor, outcome.high)
                        reasons.append(f"{ahead.name}: at least {floor}: {desired} -> {raised}")
                        desired = raised
                        priority = min(priority, ahead.priority, key=lambda p: p.rank)
                decision = Decision(
                    kind="scale",
                    pool=name,
                    rule=None,
                    priority=priority,
                    current=outcome.spec,
                    desired=desired,
                    reasons=tuple(reasons),
                    min=outcome.low,
                    max=outcome.high,
                )
                return decision, statuses, recs
            # beside other rules, the HPA's result is one vote under the pool's own guards
            lead = compiled.hpa[0]
            direction: Vote = (
                "out"
                if outcome.desired > current
                else "in"
                if outcome.desired < current
                else "none"
            )
            text = "; ".join(outcome.reasons)
            hpa_vote = _Vote(
                lead,
                direction,
                outcome.desired,
                text,
                RuleStatus(lead.name, name, None, direction, 0.0, text),
            )
        last_change = memory.last_scale("any")
        for rule in compiled.rules:
            if isinstance(rule, ThresholdRule):
                votes.append(self._threshold_vote(rule, current, obs, now, last_change))
            else:
                vote, rec = self._target_vote(rule, pool, current, active, memory, obs, now)
                votes.append(vote)
                if rec is not None:
                    if recs is None:
                        recs = dict(memory.recommendations)
                    recs[rule.name] = _remember(
                        recs.get(rule.name, ()), rec, pool.scale_in_stabilization
                    )

        statuses.extend([v.status for v in votes])
        if hpa_vote is not None:
            votes.append(hpa_vote)
        desired, priority, reasons = self._combine(
            name, pool, votes, current, starting, memory, now
        )

        # fallback: every metric missing for long enough
        if pool.fallback is not None and votes and all(v.vote == "missing" for v in votes):
            newest = max((v.newest_at for v in votes if v.newest_at is not None), default=None)
            long_enough = newest is None or now - newest >= pool.fallback.after
            if long_enough and desired < pool.fallback.count:
                reasons.append(
                    f"every metric missing for {format_duration(pool.fallback.after)} or more: "
                    f"fallback {desired} -> {pool.fallback.count}"
                )
                desired = pool.fallback.count

        if compiled.predictive:
            for ahead in compiled.predictive:
                floor, status = self._predict(ahead, pool, active, obs, now)
                statuses.append(status)
                reasons.append(status.reason)
                if floor is not None and floor > desired:
                    reasons.append(f"{ahead.name}: at least {floor}: {desired} -> {floor}")
                    desired = floor
                    priority = min(priority, ahead.priority, key=lambda p: p.rank)

        low, high, notes = self.bounds(name, now)
        reasons.extend(notes)
        if desired > high:
            reasons.append(f"capped {desired} -> {high} by max")
            desired = high
        elif desired < low:
            reasons.append(f"raised {desired} -> {low} by min")
            desired = low
            priority = min(priority, pool.priority, key=lambda p: p.rank)

        if desired > current:
            limit, which = scale_out_limit(current, memory.events, now, pool.scale_out_limits)
            if desired > limit:
                reasons.append(f"limited {desired} -> {limit} by rate limit ({which})")
                desired = limit
        elif desired < current:
            limit, which = scale_in_limit(current, memory.events, now, pool.scale_in_limits)
            if desired < limit:
                reasons.append(f"limited {desired} -> {limit} by rate limit ({which})")
                desired = limit

        if desired == current and not any(r.startswith("no change") for r in reasons):
            reasons.append(f"no change: {current} instances")
        elif desired != current:
            reasons.append(f"scale {'out' if desired > current else 'in'} {current} -> {desired}")
        decision = Decision(
            kind="scale",
            pool=name,
            rule=None,
            priority=priority,
            current=current,
            desired=desired,
            reasons=tuple(reasons),
            min=low,
            max=high,
        )
        return decision, statuses, recs

    def _hpa(
        self,
        name: str,
        compiled: _Compiled,
        obs: Observation,
        now: float,
        instances: Sequence[Instance],
        live: int,
        memory: PoolMemory,
        detail: bool = True,
    ) -> _HpaOutcome:
        """The pool's ``mode = "hpa"`` rules as one Kubernetes HPA (``senex_scale.core.hpa``).

        ``detail=False``: no rule statuses, and the reasons of every tick left out (the
        counts and the recommendations are the same)."""
        rules = compiled.hpa
        lead = rules[0]
        up, down = lead.behavior.scale_up, lead.behavior.scale_down
        spec = obs.desired.get(name, live)
        low, high, notes = self.bounds(name, now)
        out = _HpaOutcome(spec, spec, low, high, lead.priority, list(notes), [], None)
        if spec == 0 and low > 0:
            out.reasons.append("no change: 0 instances and min > 0 (the HPA's 'disabled')")
            return out
        if spec > high:
            out.desired, out.priority = high, compiled.pool.priority
            out.reasons.append(f"{spec} instances above max {high}: {spec} -> {high}")
            return out
        if spec < low:
            out.desired, out.priority = low, compiled.pool.priority
            out.reasons.append(f"{spec} instances below min {low}: {spec} -> {low}")
            return out
        proposals = [self._hpa_recommendation(r, obs, now, instances, spec, live) for r in rules]
        for rule, rec in zip(rules, proposals, strict=True) if detail else ():
            if rec.replicas is None:
                text = f"{rule.name}: no data ({rec.reason})"
                vote: Vote | Literal["fires", "cooldown"] = "missing"
            else:
                vote = "out" if rec.replicas > spec else "in" if rec.replicas < spec else "none"
                assert rec.usage is not None
                text = (
                    f"{rule.name} {_num(rec.usage)} (target {rule.target:g}): {rec.reason}: "
                    f"{spec} -> {rec.replicas}"
                )
            out.reasons.append(text)
            out.statuses.append(RuleStatus(rule.name, name, rec.usage, vote, 0.0, text))
        combined, error = hpa.combine(spec, proposals)
        if combined is None:
            out.reasons.append(f"no change: {error}")
            return out
        up_window, down_window = self._hpa_conf[lead.name].windows
        history = memory.recommendations.get(lead.name, ())
        desired = hpa.stabilize(history, now, spec, combined, up_window, down_window)
        out.recommendations = _hpa_history(history, now, combined, up_window, down_window)
        if desired != combined:
            which, window = ("up", up_window) if desired < combined else ("down", down_window)
            out.reasons.append(
                f"stabilized {combined} -> {desired} (scale-{which} window "
                f"{format_duration(window)})"
            )
        limited, why = hpa.limit_rate(spec, desired, low, high, memory.events, now, up, down)
        if why is not None:
            out.reasons.append(f"limited {desired} -> {limited} by {why}")
        if limited < spec and lead.uses_anti_flap:
            for rule, rec in zip(rules, proposals, strict=True):
                if rule.per_instance and rec.usage is not None and limited > 0:
                    projected = rec.usage * spec / limited
                    ceiling = rule.target * (1 + rule.tolerance.scale_out)
                    if projected > ceiling:
                        out.reasons.append(
                            f"no change: {spec} -> {limited} would put {rule.name} at "
                            f"{_num(projected)}, over {_num(ceiling)} (anti_flap)"
                        )
                        limited = spec
                        break
        out.desired = limited
        if not detail:
            return out
        if limited == spec:
            out.reasons.append(f"no change: {spec} instances")
        else:
            out.reasons.append(f"scale {'out' if limited > spec else 'in'} {spec} -> {limited}")
        return out

    def _hpa_recommendation(
        self,
        rule: TargetRule,
        obs: Observation,
        now: float,
        instances: Sequence[Instance],
        spec: int,
        live: int,
    ) -> hpa.Recommendation:
        """One metric's proposal, as the HPA's replica calculator makes it."""
        error = obs.errors.get(rule.name)
        if error is not None:
            return hpa.Recommendation(None, None, f"source error: {error}")
        samples = obs.samples.get(rule.name, ())
        conf = self._hpa_conf[rule.name]
        tolerances, warmup = conf.tolerances, conf.warmup
        if rule.per_instance:
            values = latest_by_instance_at(samples, now, self.stale)
            window = rule.readiness.metric_window
            pods = []
            for inst in instances:
                value, at = values.get(inst.id, (None, 0.0))
                started = inst.started_at if inst.started_at is not None else -math.inf
                if inst.state is InstanceState.DRAINING:
                    pods.append(hpa.Pod(inst.id, value, "ignored"))
                elif inst.state is InstanceState.STARTING:
                    # not ready since it started (an unknown start: just now)
                    since = inst.started_at if inst.started_at is not None else now
                    pods.append(hpa.Pod(inst.id, value, "running", False, since, since, at))
                elif warmup and not inst.warm(now, warmup):
                    pods.append(hpa.Pod(inst.id, value, "pending"))  # our warm-up: not capacity
                else:
                    pods.append(
                        hpa.Pod(inst.id, value, "running", True, started, inst.ready_at, at, window)
                    )
            return hpa.pod_replicas(
                spec,
                pods,
                rule.target,
                conf.kind,
                tolerances,
                now,
                cpu=conf.cpu,
                cpu_init=rule.readiness.cpu_initialization_period,
                readiness_delay=rule.readiness.initial_readiness_delay,
            )
        usage, why = latest(samples, rule.metric.aggregate, now, self.stale)
        if usage is None:
            return hpa.Recommendation(None, None, why or "no samples")
        if rule.target_type == "value":
            ready = sum(1 for i in instances if i.warm(now, warmup))
            return hpa.value_replicas(spec, ready, usage, rule.target, tolerances)
        return hpa.total_replicas(live, usage, rule.target, tolerances)

    def _combine(
        self,
        name: str,
        pool: Pool,
        votes: Sequence[_Vote],
        current: int,
        starting: int,
        memory: PoolMemory,
        now: float,
    ) -> tuple[int, Priority, list[str]]:
        """Safest result of all rules: out beats no change beats in; then cooldowns and guards."""
        outs: list[_Vote] = []
        ins: list[_Vote] = []
        nones: list[_Vote] = []
        missing: list[_Vote] = []
        for v in votes:  # one pass: this runs for every pool every tick
            kind = v.vote
            if kind == "none":
                nones.append(v)
            elif kind == "out":
                outs.append(v)
            elif kind == "in":
                ins.append(v)
            elif kind == "missing":
                missing.append(v)
        reasons: list[str] = []
        if outs:
            best = max(outs, key=lambda v: (v.desired, -v.rule.priority.rank))
            priority = min((v.rule.priority for v in outs), key=lambda p: p.rank)
            reasons.extend(v.reason for v in sorted(outs, key=lambda v: -v.desired))
            held = _cooldown("scale-out", memory.last_scale("out"), pool.scale_out_cooldown, now)
            if held:
                reasons.append(held)
                return current, priority, reasons
            return best.desired, priority, reasons
        priority = pool.priority
        if not ins:
            reasons.extend(v.reason for v in (*nones, *missing))
            return current, priority, reasons
        reasons.extend(v.reason for v in ins)
        priority = min((v.rule.priority for v in ins), key=lambda p: p.rank)
        if missing:
            names = ", ".join(v.rule.name for v in missing)
            reasons.extend(v.reason for v in missing)
            reasons.append(f"no change: no scale-in while {names} has no data")
            return current, priority, reasons
        candidate = min(v.desired for v in ins)
        blocking = [v for v in nones if not _band_allows(v, current, candidate)]
        if blocking:
            reasons.extend(v.reason for v in blocking)
            names = ", ".join(v.rule.name for v in blocking)
            reasons.append(f"no change: {names} does not agree to scale in")
            return current, priority, reasons
        if starting:
            reasons.append(f"no change: scale-out in progress ({starting} starting)")
            return current, priority, reasons
        held = _cooldown("scale-in", memory.last_scale("any"), pool.scale_in_cooldown, now)
        if held:
            reasons.append(held)
            return current, priority, reasons
        desired = min(v.desired for v in ins)
        # Anti-flap: a per-instance average would rise by current/desired after the scale-in.
        for vote in votes:
            veto = _would_breach(vote, current, desired)
            if veto:
                reasons.append(f"no change: {veto}")
                return current, priority, reasons
        return max(desired, 0), priority, reasons

    def _threshold_vote(
        self,
        rule: ThresholdRule,
        current: int,
        obs: Observation,
        now: float,
        last_change: float | None,
    ) -> _Vote:
        """Out, in or no change by the rule's windows; a window restarts at each scale change.

        Samples taken before the pool last changed size describe the old capacity, so a
        streak counts only from that change (and a 0s window needs a sample after it).
        """
        samples = obs.samples.get(rule.name, ())
        how = rule.metric.aggregate
        error = obs.errors.get(rule.name)
        if error is not None:
            return self._missing(rule, f"source error: {error}", samples, now)
        out_streak = in_streak = None
        if rule.scale_out is not None:
            out_streak = _restart(
                self._streak(samples, how, rule.scale_out, now),
                now,
                last_change,
                rule.scale_out.for_,
            )
            if out_streak.missing:
                return self._missing(rule, out_streak.missing, samples, now)
            if out_streak.fires:
                assert out_streak.value is not None
                step = step_size(rule.scale_out.step, current)
                reason = (
                    f"{rule.name} {_num(out_streak.value)} {rule.scale_out.text}: "
                    f"+{step} ({current} -> {current + step})"
                )
                return _Vote(
                    rule,
                    "out",
                    current + step,
                    reason,
                    RuleStatus(
                        rule.name, rule.pool, out_streak.value, "out", out_streak.held, reason
                    ),
                )
        if rule.scale_in is not None:
            in_streak = _restart(
                self._streak(samples, how, rule.scale_in, now), now, last_change, rule.scale_in.for_
            )
            if in_streak.missing:
                return self._missing(rule, in_streak.missing, samples, now)
            if in_streak.fires:
                assert in_streak.value is not None
                step = min(step_size(rule.scale_in.step, current), current)
                reason = (
                    f"{rule.name} {_num(in_streak.value)} {rule.scale_in.text}: "
                    f"-{step} ({current} -> {current - step})"
                )
                return _Vote(
                    rule,
                    "in",
                    current - step,
                    reason,
                    RuleStatus(rule.name, rule.pool, in_streak.value, "in", in_streak.held, reason),
                )
        streak = out_streak or in_streak
        assert streak is not None and streak.value is not None
        value = streak.value
        partial = [
            (cond, s)
            for cond, s in ((rule.scale_out, out_streak), (rule.scale_in, in_streak))
            if cond is not None and s is not None and s.held > 0
        ]
        if partial:
            cond, s = partial[0]
            assert cond is not None and s is not None
            text = (
                f"{rule.name} {_num(value)} {_head(cond)} for "
                f"{_duration(s.held)} of {_duration(cond.for_)}"
            )
        else:
            text = f"{rule.name} {_num(value)}: within {rule.band}"
        vote: Vote = "none" if rule.scale_in is not None else "abstain"
        return _Vote(
            rule,
            vote,
            current,
            text,
            RuleStatus(
                rule.name, rule.pool, value, vote, partial[0][1].held if partial else 0.0, text
            ),
        )

    def _target_vote(
        self,
        rule: TargetRule,
        pool: Pool,
        current: int,
        active: Sequence[Instance],
        memory: PoolMemory,
        obs: Observation,
        now: float,
    ) -> tuple[_Vote, tuple[float, int] | None]:
        samples = obs.samples.get(rule.name, ())
        error = obs.errors.get(rule.name)
        if error is not None:
            return self._missing(rule, f"source error: {error}", samples, now), None
        got = self._target_raw(rule, pool, current, active, samples, now)
        if isinstance(got, str):
            return self._missing(rule, got, samples, now), None
        value, raw, how = got
        head = f"{rule.name} {_num(value)} (target {rule.target:g}): {how}"
        rec = (now, raw)
        if raw > current:
            reason = f"{head}: {current} -> {raw}"
            return _Vote(
                rule,
                "out",
                raw,
                reason,
                RuleStatus(rule.name, rule.pool, value, "out", 0.0, reason),
            ), rec
        if raw < current:
            held = stabilized(
                memory.recommendations.get(rule.name, ()), now, pool.scale_in_stabilization, raw
            )
            if held < current:
                reason = f"{head}: {current} -> {held}" + (
                    f" (highest of last {format_duration(pool.scale_in_stabilization)}: {held})"
                    if held != raw
                    else ""
                )
                return _Vote(
                    rule,
                    "in",
                    held,
                    reason,
                    RuleStatus(rule.name, rule.pool, value, "in", 0.0, reason),
                ), rec
            reason = (
                f"{head}: wants {raw}, stabilization holds {current} "
                f"(highest of last {format_duration(pool.scale_in_stabilization)})"
            )
            return _Vote(
                rule,
                "none",
                current,
                reason,
                RuleStatus(rule.name, rule.pool, value, "none", 0.0, reason),
            ), rec
        reason = f"{head}: {current} is right"
        return _Vote(
            rule,
            "none",
            current,
            reason,
            RuleStatus(rule.name, rule.pool, value, "none", 0.0, reason),
        ), rec

    def _target_raw(
        self,
        rule: TargetRule,
        pool: Pool,
        current: int,
        active: Sequence[Instance],
        samples: Sequence[Sample],
        now: float,
    ) -> tuple[float, int, str] | str:
        """A target rule's (value, count it wants, how), or why its value is missing."""
        tol = rule.tolerance
        if rule.target_type == "average":
            values = latest_by_instance(samples, now, self.stale)
            warmup = pool.warmup if rule.uses_warmup else 0.0
            warm = [i for i in active if i.warm(now, warmup)]
            ready_values = {i.id: values[i.id] for i in warm if i.id in values}
            if not ready_values:
                if values or samples:
                    return "no fresh sample from a ready instance"
                return "no samples"
            raw, how = average_replicas(
                current,
                ready_values,
                missing=len(warm) - len(ready_values),
                unready=len(active) - len(warm),
                target=rule.target,
                tolerance_out=tol.scale_out,
                tolerance_in=tol.scale_in,
            )
            return sum(ready_values.values()) / len(ready_values), raw, how
        total, why_missing = latest(samples, rule.metric.aggregate, now, self.stale)
        if total is None:
            return why_missing or "no samples"
        raw, how = total_replicas(current, total, rule.target, tol.scale_out, tol.scale_in)
        return total, raw, how

    def _quiet_pool(
        self, name: str, compiled: _Compiled, obs: Observation, now: float
    ) -> tuple[Decision, dict[str, tuple[tuple[float, int], ...]] | None] | None:
        """The pool's "no change" and memory when it provably stays as it is, else None.

        It stays when it is at its effective minimum with every instance ready (so no
        scale-in can take it lower, and nothing is starting or draining), no rule's data is
        missing (no fallback), and no rule can vote out: a threshold rule's newest value does
        not breach its scale-out line (a window fires only on a breaching newest sample), and
        a target rule wants no more than the current count. The target rules' wishes are
        remembered as on the full path (a later scale-in reads the stabilization window);
        the threshold windows' memo is left as it is (a later read walks back instead).
        Pools with an HPA-mode or an acting predictive rule take the full path.
        """
        if compiled.hpa or compiled.predictive:
            return None
        instances = obs.instances.get(name, ())
        for inst in instances:
            if inst.state is not InstanceState.READY:
                return None
        current = len(instances)
        low, high, _ = self.bounds(name, now)
        if current != low or current > high:
            return None
        pool = compiled.pool
        recs: dict[str, tuple[tuple[float, int], ...]] | None = None
        for rule in compiled.rules:
            if obs.errors.get(rule.name) is not None:
                return None
            samples = obs.samples.get(rule.name, ())
            if isinstance(rule, ThresholdRule):
                newest = next(pool_values(samples, rule.metric.aggregate, now), None)
                if newest is None or now - newest[0] > self.stale:
                    return None
                if rule.scale_out is not None and rule.scale_out.breached(newest[1]):
                    return None
                continue
            got = self._target_raw(rule, pool, current, instances, samples, now)
            if isinstance(got, str) or got[1] > current:
                return None
            if recs is None:
                recs = dict(obs.memory.pool(name).recommendations)
            recs[rule.name] = _remember(
                recs.get(rule.name, ()), (now, got[1]), pool.scale_in_stabilization
            )
        decision = Decision(
            kind="scale",
            pool=name,
            rule=None,
            priority=pool.priority,
            current=current,
            desired=current,
            reasons=(),
            min=low,
            max=high,
        )
        return decision, recs

    def _predict(
        self,
        rule: PredictiveRule,
        pool: Pool,
        active: Sequence[Instance],
        obs: Observation,
        now: float,
    ) -> tuple[int | None, RuleStatus]:
        """Learn this tick's demand; the floor the rule holds (None: it contributes nothing).

        Never a scale-in: the floor only raises the pool's desired count. Reactive only (no
        floor) while too few sessions are learned or the recent error is too high, in
        forecast-only mode, and outside the sessions' windows.
        """
        forecaster = self.forecasters[rule.name]
        demand: float | None = None
        error = obs.errors.get(rule.name)
        if error is None:
            value, _ = latest(
                obs.samples.get(rule.name, ()), rule.metric.aggregate, now, self.stale
            )
            if value is not None:
                if rule.target_type == "total":
                    demand = value / rule.target
                else:
                    ready = sum(1 for i in active if i.state is InstanceState.READY)
                    demand = value * ready / rule.target
                forecaster.observe(now, demand)
        lead = rule.lead_for(pool)
        now_forecast = forecaster.forecast(now)
        peak = forecaster.peak(now, now + lead)
        mape = forecaster.mape()
        learned = forecaster.learned(now)
        floor = None if peak is None else math.ceil(peak.value * (1 + rule.margin) - 1e-9)
        head = f"{rule.name}"
        if rule.mode == "forecast-only":
            head += " (forecast-only)"
        err = f"{mape:.0%}" if mape is not None else "not scored yet"
        acting = False
        if peak is None or floor is None:
            why = (
                f"{learned} of {rule.min_sessions} sessions learned"
                if learned < rule.min_sessions
                else "no session within the lead"
            )
            text = f"{head}: no forecast ({why}): reactive only"
        elif learned < rule.min_sessions:
            text = (
                f"{head}: {learned} of {rule.min_sessions} sessions learned, forecast "
                f"{_num(peak.value)}: reactive only"
            )
        elif mape is not None and mape > rule.max_error:
            text = (
                f"{head}: recent error {err} above max_error {rule.max_error:.0%}, forecast "
                f"{_num(peak.value)}: reactive only"
            )
        else:
            when = format_duration(max(0.0, peak.at - now)) if peak.at > now else "now"
            text = (
                f"{head}: forecast {_num(peak.value)} {'in ' if when != 'now' else ''}{when} "
                f"(+{rule.margin:.0%}) -> {floor}; error {err}, {learned} sessions"
            )
            if rule.mode == "forecast-only":
                text += ": not acting"
            else:
                acting = True
        vote: Vote = "abstain"
        if demand is None:
            vote = "missing"
        elif acting and floor is not None:
            vote = "out" if floor > len(active) else "none"
        self._forecasts.append(
            ForecastStatus(
                rule.name,
                rule.pool,
                rule.mode,
                demand,
                now_forecast,
                None if peak is None else peak.value,
                floor,
                mape,
                learned,
                acting,
                text,
            )
        )
        status = RuleStatus(rule.name, rule.pool, demand, vote, 0.0, text)
        return (floor if acting else None), status

    def _missing(
        self, rule: ThresholdRule | TargetRule, why: str, samples: Sequence[Sample], now: float
    ) -> _Vote:
        newest = next((at for at, _ in pool_values(samples, "max", now)), None)
        reason = f"{rule.name}: no data ({why})"
        return _Vote(
            rule,
            "missing",
            0,
            reason,
            RuleStatus(rule.name, rule.pool, None, "missing", 0.0, reason),
            newest_at=newest,
        )

    def _streak(self, samples: Sequence[Sample], how: str, cond: Condition, now: float) -> Streak:
        return sustained(
            samples, how, cond.breached, now, cond.for_, self.gap, self.stale, self._memo, id(cond)
        )

    # ------------------------------------------------------------------ actions

    def _decide_action(
        self, rule: ActionRule, obs: Observation, now: float
    ) -> tuple[Decision | None, RuleStatus]:
        error = obs.errors.get(rule.name)
        if error is not None:
            reason = f"{rule.name}: no data (source error: {error})"
            return None, RuleStatus(rule.name, rule.pool, None, "missing", 0.0, reason)
        samples = obs.samples.get(rule.name, ())
        streak = self._streak(samples, rule.metric.aggregate, rule.when, now)
        if streak.missing or streak.value is None:
            reason = f"{rule.name}: no data ({streak.missing})"
            return None, RuleStatus(rule.name, rule.pool, None, "missing", 0.0, reason)
        if not streak.fires:
            reason = f"{rule.name} {_num(streak.value)}: not {rule.when.text}"
            return None, RuleStatus(rule.name, rule.pool, streak.value, "none", streak.held, reason)
        cooldown = (
            rule.cooldown if rule.cooldown is not None else self.policy.controller.action_cooldown
        )
        last = obs.memory.actions.get(rule.name)
        head = f"{rule.name} {_num(streak.value)} {rule.when.text}"
        if last is not None and now - last < cooldown:
            reason = (
                f"{head}: fired {format_duration(now - last)} ago, "
                f"cooldown {format_duration(cooldown)}"
            )
            return None, RuleStatus(
                rule.name, rule.pool, streak.value, "cooldown", streak.held, reason
            )
        what = (
            rule.action.message if isinstance(rule.action, Notify) else " ".join(rule.action.argv)
        )
        reason = f"{head}: {rule.action.type} {what}"
        decision = Decision(
            kind="action",
            pool=rule.pool,
            rule=rule.name,
            priority=rule.priority,
            current=0,
            desired=0,
            reasons=(reason,),
            action=rule.action,
        )
        return decision, RuleStatus(
            rule.name, rule.pool, streak.value, "fires", streak.held, reason
        )


class _HpaConf(NamedTuple):
    tolerances: hpa.Tolerances
    kind: hpa.PodTarget
    cpu: bool
    warmup: float
    windows: tuple[float, float]


@dataclass(slots=True)
class _HpaOutcome:
    """What the pool's HPA decided, before any other rule of the pool has its say."""

    spec: int
    desired: int
    low: int
    high: int
    priority: Priority
    reasons: list[str]
    statuses: list[RuleStatus]
    recommendations: tuple[tuple[float, int], ...] | None
    """The new recommendation history (None: none was made this tick)."""


def _first(value: float | None, default: float) -> float:
    return default if value is None else value


def _remember(
    history: tuple[tuple[float, int], ...], rec: tuple[float, int], window: float
) -> tuple[tuple[float, int], ...]:
    """A target rule's wishes within its stabilization ``window``, with ``rec`` added."""
    now = rec[0]
    first = 0  # time-ordered: only the oldest few fall out of the window
    while first < len(history) and now - history[first][0] > window:
        first += 1
    return (*history[first:], rec)


def _hpa_history(
    history: tuple[tuple[float, int], ...],
    now: float,
    combined: int,
    up_window: float,
    down_window: float,
) -> tuple[tuple[float, int], ...]:
    """The HPA's recommendations within its longest window, with ``combined`` added."""
    horizon = now - max(up_window, down_window)
    first = 0  # time-ordered: only the oldest few fall out of the windows
    while first < len(history) and history[first][0] <= horizon:
        first += 1
    return (*history[first:], (now, combined))


def _quiet_band(cond: Condition | None) -> Band:
    """The values that do not breach ``cond`` (all of them without one)."""
    if cond is None:
        return ANY
    if cond.above is not None:
        return (-math.inf, cond.above)
    assert cond.below is not None
    return (cond.below, math.inf)


def _cooldown(label: str, last: float | None, cooldown: float, now: float) -> str | None:
    """The reason a change waits for its cooldown, or None when it may go ahead."""
    if last is None or now - last >= cooldown:
        return None
    left = cooldown - (now - last)
    return (
        f"no change: {label} cooldown, {format_duration(left)} of {format_duration(cooldown)} left"
    )


_duration = functools.lru_cache(maxsize=4096)(format_duration)
"""``format_duration`` for the reasons built every tick (few distinct values: held times)."""


@functools.lru_cache(maxsize=256)
def _head(cond: Condition) -> str:
    """'> 70' of '> 70 for 5m' (conditions are frozen and live as long as their policy)."""
    return cond.text.split(" for ")[0]


def _restart(streak: Streak, now: float, last_change: float | None, window: float) -> Streak:
    """``streak`` counted only from the pool's last scale change."""
    if last_change is None or streak.value is None:
        return streak
    since = now - last_change
    if since > 0 and since >= streak.held and (streak.held >= window or not streak.fires):
        return streak  # it began after the change: nothing to cut (no new tuple each tick)
    held = max(0.0, min(streak.held, since))
    fires = streak.fires and held >= window and now > last_change
    return Streak(streak.value, held, fires, streak.missing)


ANTI_FLAP_MARGIN = 0.9
"""A scale-in may raise an averaged metric to at most 90 % of its scale-out line, so noise
around the new level does not trigger the scale-out straight back (a 10 % band, like HPA's
tolerance)."""


def _band_allows(vote: _Vote, current: int, desired: int) -> bool:
    """True when an in-band threshold rule has no objection to scaling in to ``desired``.

    A per-instance average rises by ``current / desired`` when instances go; if it stays
    clear of the rule's scale-out line, the rule has no reason to hold the pool (another rule,
    such as a target, may then scale in). Other metrics cannot be projected: they hold.
    """
    rule = vote.rule
    value = vote.status.value
    if not isinstance(rule, ThresholdRule) or rule.metric.aggregate != "avg" or value is None:
        return False
    cond = rule.scale_out
    if cond is None or cond.above is None or desired <= 0:
        return False
    return value * current / desired <= cond.above * ANTI_FLAP_MARGIN


def _would_breach(vote: _Vote, current: int, desired: int) -> str | None:
    """Why removing instances would push an averaged metric over its scale-out line, or None."""
    rule = vote.rule
    value = vote.status.value
    if value is None or desired <= 0:
        return None
    projected = value * current / desired
    if isinstance(rule, ThresholdRule):
        if rule.metric.aggregate != "avg":
            return None  # a max, min or sum does not scale with the instance count
        cond = rule.scale_out
        if (
            cond is not None
            and cond.above is not None
            and projected > cond.above * ANTI_FLAP_MARGIN
        ):
            return (
                f"{current} -> {desired} would put {rule.name} at {_num(projected)}, "
                f"above 90% of its scale-out line {cond.above:g}"
            )
    elif rule.target_type == "average" and rule.uses_anti_flap:
        limit = rule.target * (1 + rule.tolerance.scale_out)
        if projected > limit:
            return (
                f"{current} -> {desired} would put {rule.name} at {_num(projected)}, "
                f"over its target {rule.target:g} (+{rule.tolerance.scale_out:g})"
            )
    return None


def decide(policy: Policy, observation: Observation, now: float) -> Plan:
    """Decisions for every pool and action rule of ``policy`` at ``now`` (one-shot)."""
    return Decider(policy).decide(observation, now)
