"""Shadow mode, ``senex-scale run --shadow``: read everything, act on nothing, and record
what this policy would have run next to what the pools really ran.

One shadow tick::

    collect every rule's metric, store the samples          (as the leader does: reads only)
    list every pool's instances (runtime + balancer)          the real count R, per pool
    the shadow's own count S per pool (starts at R; follows only its own decisions)
    the rules' samples rescaled to S instances                per-instance load x R / S
    plan = core.Decider.decide(S virtual instances, rescaled samples, shadow memory, now)
    a scale decision that acts: S := desired (a would-be action, recorded as outcome "shadow")
    an action rule that fires: recorded as "shadow", never run
    record per pool: R, S, short?, would-be action, reasons      (store: shadow_ticks)

Nothing is started, stopped, added, drained or run; no repair, no rebalance. The shadow
takes **no leader lock and no fencing token**: it can never block or depose a real
controller, whichever state store it uses. It writes only samples (the same readings a
leader stores), its own memory (``shadow:memory``), its own status (``status:<id>``), the
``shadow_ticks`` rows and decisions with the outcome ``shadow``; never the leader's status,
memory, journal or backoff. Its own state URL is the cleaner choice (``--state``).

The model behind S: work divides evenly over a pool's instances (the simulator's capacity
model says the same), so a per-instance signal (``cpu``, ``busy``, ``connections`` averaged,
maxed or min'd over instances) measured on R instances reads ``value x R / S`` on S. Pool
totals (a queue's length, Redis memory, disk) read as they are. The ratio of this tick is
applied to the whole window (a ``for`` window restarts at each scale change anyway).

Short: a pool is short at a tick when one of its threshold rules is above its scale-out
line (``scale_out.above``) at this tick, the line where the policy itself asks for more:
measured for R, rescaled for S. A pool-total signal cannot be rescaled: S is short on it
when R is and S <= R.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from senex_scale.controller.collect import Listing, ingest, list_instances
from senex_scale.core.state import Instance, InstanceState, Memory, Observation, Sample
from senex_scale.policy.models import Policy, ThresholdRule
from senex_scale.store.sql import memory_from_json, memory_to_json, redact_url

if TYPE_CHECKING:
    from senex_scale.controller.loop import ControllerLoop, TickReport

MEMORY_KEY = "shadow:memory"
PER_INSTANCE = frozenset({"cpu", "busy", "connections"})
"""Signals measured per instance: they scale with R / S (when averaged, maxed or min'd)."""


def _aggregate(values: Sequence[float], how: str) -> float:
    if how == "sum":
        return sum(values)
    if how == "max":
        return max(values)
    if how == "min":
        return min(values)
    return sum(values) / len(values)


def scales_with_count(rule: Any) -> bool:
    """Whether ``rule``'s value divides over the instances (module docstring)."""
    metric = getattr(rule, "metric", None)
    return (
        metric is not None
        and metric.signal in PER_INSTANCE
        and metric.aggregate in ("avg", "max", "min")
    )


def rescale(
    policy: Policy,
    samples: Mapping[str, Sequence[Sample]],
    ratio: Mapping[str, float],
) -> dict[str, list[Sample]]:
    """Each rule's samples as S instances would read them (``ratio``: R / S per pool)."""
    out: dict[str, list[Sample]] = {}
    rules = {r.name: r for r in policy.rules}
    for name, items in samples.items():
        rule = rules.get(name)
        pool = getattr(rule, "pool", None)
        factor = ratio.get(pool or "", 1.0) if scales_with_count(rule) else 1.0
        if factor == 1.0:
            out[name] = list(items)
        else:
            out[name] = [Sample(s.at, s.value * factor, s.instance) for s in items]
    return out


def latest_value(rule: Any, samples: Sequence[Sample], now: float, window: float) -> float | None:
    """The rule's pool value from its newest samples (one time), if recent enough."""
    if not samples:
        return None
    newest = samples[-1].at
    if now - newest > window:
        return None
    values = [s.value for s in samples if s.at == newest]
    return _aggregate(values, rule.metric.aggregate)


def short(
    policy: Policy,
    pool: str,
    samples: Mapping[str, Sequence[Sample]],
    real: int | None,
    shadow: int,
    now: float,
    window: float,
) -> tuple[bool, bool]:
    """(real short, shadow short) of ``pool`` at ``now`` (module docstring)."""
    real_short = shadow_short = False
    for rule in policy.rules:
        if not (
            isinstance(rule, ThresholdRule)
            and rule.enabled
            and rule.pool == pool
            and rule.scale_out is not None
            and rule.scale_out.above is not None
        ):
            continue
        value = latest_value(rule, samples.get(rule.name, ()), now, window)
        if value is None:
            continue
        line = rule.scale_out.above
        over = value > line
        real_short |= over
        if scales_with_count(rule) and real is not None and shadow > 0:
            shadow_short |= value * real / shadow > line
        elif scales_with_count(rule) and shadow == 0:
            shadow_short |= value > 0
        else:
            shadow_short |= over and (real is None or shadow <= real)
    return real_short, shadow_short


@dataclass
class ShadowPool:
    """The shadow's own count of one pool: instances it kept and those it 'started'."""

    count: int
    started: dict[str, float] = field(default_factory=dict)
    """Virtual instances beyond the real ones, with when the shadow started them."""


class Shadow:
    """Runs the loop's ticks in shadow mode (``ControllerLoop(shadow=True)``)."""

    def __init__(self) -> None:
        self.pools: dict[str, ShadowPool] = {}
        self.memory: Memory | None = None
        self.actions = 0

    def tick(self, loop: ControllerLoop, report: TickReport) -> TickReport:
        """One shadow tick (module docstring); ``report`` is filled and returned."""
        ctx = loop.ctx
        store = ctx.store
        now = report.at
        policy = loop.policy
        errors, source_errors = ingest(ctx, loop.collector.collect(now))
        listing = list_instances(ctx, None)
        real = {
            name: None if name in listing.broken else len(items)
            for name, items in listing.instances.items()
        }
        for name, spec in policy.pools.items():
            if name not in self.pools:
                start = real.get(name)
                self.pools[name] = ShadowPool(spec.min if start is None else start)
        for name in list(self.pools):
            if name not in policy.pools:  # gone after a reload
                del self.pools[name]
        ratio = {
            name: (real[name] or 0) / pool.count
            for name, pool in self.pools.items()
            if real.get(name) is not None and pool.count > 0
        }
        gap = policy.controller.gap_bound
        samples = {
            rule: store.samples(rule, now - window - gap) for rule, window in loop.windows.items()
        }
        scaled = rescale(policy, samples, ratio)
        instances = {name: self._instances(name, listing) for name in self.pools}
        if getattr(loop.decider, "forecasters", None):  # predictive rules: as the leader does
            from senex_scale.controller.forecasting import prime

            prime(loop.decider, store, now, policy)
        if self.memory is None:
            doc = store.get(MEMORY_KEY)
            self.memory = memory_from_json(doc) if doc else Memory()
        plan = loop.decider.decide(Observation(instances, scaled, errors, self.memory), now)
        memory = plan.memory
        would: dict[str, tuple[str, str]] = {}
        for decision in plan.decisions:
            key = decision.pool if decision.kind == "scale" else decision.rule
            if key is None:
                continue
            if not decision.act:
                report.outcomes[key] = "hold"
                continue
            doc = decision.as_dict()
            store.record_decision(now, doc, "shadow", {"shadow": True}, dry_run=True)
            ctx.metrics.decisions.labels(decision.pool or "", "shadow").inc()
            report.outcomes[key] = "shadow"
            self.actions += 1
            if decision.kind == "action":
                memory = memory.with_action(key, now)
                ctx.log.info("shadow: would run", rule=key, reasons=list(decision.reasons))
                continue
            pool = self.pools[key]
            before = pool.count
            self._resize(key, decision.desired, listing, now)
            memory = memory.with_scale(key, now, before, decision.desired, ctx.keep)
            would[key] = (decision.direction, "; ".join(decision.reasons))
            ctx.log.info(
                "shadow: would scale",
                pool=key,
                real=real.get(key),
                before=before,
                desired=decision.desired,
                reasons=list(decision.reasons),
            )
        self.memory = memory
        store.put(MEMORY_KEY, memory_to_json(memory))
        rows = []
        window = max(3 * policy.controller.interval, 1.0)
        for name, pool in self.pools.items():
            observed = real.get(name)
            real_short, shadow_short = short(
                policy, name, samples, observed, pool.count, now, window
            )
            action, reasons = would.get(name, ("", ""))
            rows.append((name, observed, pool.count, real_short, shadow_short, action, reasons))
        store.record_shadow(now, rows)
        report.plan = plan
        status = {
            "at": now,
            "role": "shadow",
            "controller": ctx.controller_id,
            "lock": "none (shadow)",
            "fence": 0,
            "interval": policy.controller.interval,
            "state": redact_url(store.url),
            "pools": [
                {"pool": name, "current": real.get(name), "shadow": pool.count}
                for name, pool in self.pools.items()
            ],
            "source_errors": source_errors,
            "shadow_actions": self.actions,
        }
        store.put_status(ctx.controller_id, status, leader=False)
        return report

    def _instances(self, name: str, listing: Listing) -> list[Instance]:
        """S instances: the real ones first (their ids and start times), then the shadow's."""
        pool = self.pools[name]
        real = [i for i in listing.instances.get(name, []) if i.state is not InstanceState.DRAINING]
        real.sort(key=lambda i: (len(i.id), i.id))
        extra = [Instance(n, InstanceState.READY, at) for n, at in pool.started.items()]
        items = [*real, *extra][: pool.count]
        k = 1
        while len(items) < pool.count:  # real ones gone since: the shadow still has them
            n = f"shadow-kept-{k}"
            items.append(Instance(n, InstanceState.READY, None))
            k += 1
        return items

    def _resize(self, name: str, desired: int, listing: Listing, now: float) -> None:
        pool = self.pools[name]
        real = len(
            [i for i in listing.instances.get(name, []) if i.state is not InstanceState.DRAINING]
        )
        pool.count = desired
        need = max(0, desired - real)
        while len(pool.started) > need:  # scale-in: the shadow's newest go first
            pool.started.pop(next(reversed(pool.started)))
        k = 1
        while len(pool.started) < need:
            n = f"shadow-{k}"
            if n not in pool.started:
                pool.started[n] = now
            k += 1
