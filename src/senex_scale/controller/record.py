"""Record: one tick's picture for ``status``, the page and ``/metrics``.

The leader writes its snapshot as the pool picture (``status``) and as its own
(``status:<controller>``), with the chart rows, in one fenced transaction; a standby writes
only its own, so both are visible and neither erases the other.
"""

from __future__ import annotations

import math
from typing import Any

from senex_scale.controller.collect import Listing
from senex_scale.controller.context import Context
from senex_scale.core.decide import Plan, RuleStatus
from senex_scale.policy.models import ActionRule, TargetRule, ThresholdRule
from senex_scale.runtimes.spread import SpreadRuntime
from senex_scale.store.sql import redact_url


def status_doc(
    ctx: Context,
    now: float,
    plan: Plan | None,
    listing: Listing | None,
    *,
    role: str,
    extra: dict[str, Any],
) -> tuple[dict[str, Any], list[tuple[str, int, int, int, int]], list[Any]]:
    """The snapshot, and the chart rows of pools and rules."""
    counts = listing.counts() if listing is not None else {}
    broken = listing.broken if listing is not None else {}
    backoff = ctx.store.get("backoff", {}) if plan is not None else {}
    pools: list[dict[str, Any]] = []
    pool_rows = []
    if plan is not None:
        for decision in plan.decisions:
            if decision.kind != "scale" or decision.pool is None:
                continue
            low = decision.min if decision.min is not None else 0
            high = decision.max if decision.max is not None else 0
            if decision.pool in broken:
                # its instances could not be listed: the count is unknown, not 0
                pools.append(
                    {
                        "pool": decision.pool,
                        "current": None,
                        "desired": None,
                        "min": low,
                        "max": high,
                        "reasons": [],
                        "error": broken[decision.pool],
                    }
                )
                continue
            current = counts.get(decision.pool, decision.current)
            pools.append(
                {
                    "pool": decision.pool,
                    "current": current,
                    "desired": decision.desired,
                    "min": low,
                    "max": high,
                    "reasons": list(decision.reasons),
                    "error": None,
                    "backoff": backoff.get(decision.pool),
                }
            )
            pool_rows.append((decision.pool, current, decision.desired, low, high))
    rules = [rule_doc(ctx, status) for status in plan.rules] if plan is not None else []
    rule_rows = [
        (s.rule, s.pool, finite(s.value), str(s.vote), s.held)
        for s in (plan.rules if plan is not None else ())
    ]
    # a predictive rule's value is its demand; its forecast is charted beside it
    forecasts = plan.forecasts if plan is not None else ()
    rule_rows += [
        (f"{f.rule} forecast", f.pool, finite(f.forecast), "forecast", 0.0) for f in forecasts
    ]
    status = {
        "at": now,
        "role": role,
        "controller": ctx.controller_id,
        "lock": ctx.leader.kind,
        "fence": ctx.fence,
        "interval": ctx.policy.controller.interval,
        "state": redact_url(ctx.store.url),
        "pools": pools,
        "rules": rules,
        "forecasts": [f.as_dict() for f in forecasts],
        "hosts": hosts_doc(ctx),
    } | extra
    return status, pool_rows, rule_rows


def hosts_doc(ctx: Context) -> list[dict[str, Any]]:
    """Per host of the pools on several hosts: address, reachable, lost, error, and the
    instances of each pool on it (a host shared by pools is one row)."""
    rows: dict[str, dict[str, Any]] = {}
    for name, handle in ctx.pools.items():
        runtime = handle.runtime
        if not isinstance(runtime, SpreadRuntime):
            continue
        for entry in runtime.report():
            row = rows.setdefault(
                entry["host"],
                {k: v for k, v in entry.items() if k not in ("instances", "max", "reserved")}
                | {"pools": {}},
            )
            row["pools"][name] = entry["instances"]
            if entry["lost"]:
                row["lost"] = True
            if entry["reachable"] is False:
                row["reachable"] = False
                row["error"] = entry["error"]
                row["since"] = entry["since"]
    return list(rows.values())


def rule_doc(ctx: Context, status: RuleStatus) -> dict[str, Any]:
    """One rule against its thresholds (or target)."""
    rule = next((r for r in ctx.policy.rules if r.name == status.rule), None)
    out: dict[str, Any] = {
        "rule": status.rule,
        "pool": status.pool,
        "value": finite(status.value),
        "vote": str(status.vote),
        "held": status.held,
        "reason": status.reason,
    }
    out |= {"out": None, "in": None, "target": None}
    if isinstance(rule, ThresholdRule):
        out["out"] = _bound(rule.scale_out)
        out["in"] = _bound(rule.scale_in)
    elif isinstance(rule, TargetRule):
        out["target"] = rule.target
    elif isinstance(rule, ActionRule):
        out["out"] = _bound(rule.when)
    return out


def update_metrics(ctx: Context, plan: Plan, listing: Listing) -> None:
    """Pool counts, rule values and thresholds as gauges."""
    m = ctx.metrics
    counts = listing.counts()
    for decision in plan.decisions:
        if decision.kind != "scale" or decision.pool is None or decision.pool in listing.broken:
            continue
        pool = decision.pool
        m.instances.labels(pool, "current").set(counts.get(pool, decision.current))
        m.instances.labels(pool, "desired").set(decision.desired)
        m.instances.labels(pool, "min").set(decision.min or 0)
        m.instances.labels(pool, "max").set(decision.max or 0)
    for forecast in plan.forecasts:
        m.set_forecast(forecast.rule, forecast.pool, finite(forecast.forecast), forecast.mape)
    for status in plan.rules:
        m.set_rule(status.rule, status.pool, finite(status.value), status.held)
        doc = rule_doc(ctx, status)
        for direction in ("out", "in"):
            bound = doc[direction]
            if bound is not None:
                m.rule_threshold.labels(status.rule, status.pool or "", direction).set(
                    bound["value"]
                )
        if doc["target"] is not None:
            m.rule_threshold.labels(status.rule, status.pool or "", "target").set(doc["target"])


def finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _bound(condition: Any) -> dict[str, Any] | None:
    if condition is None:
        return None
    if condition.above is not None:
        return {"op": ">", "value": condition.above, "for": condition.for_}
    return {"op": "<", "value": condition.below, "for": condition.for_}
