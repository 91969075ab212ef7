"""The Kubernetes HPA, exactly: replica calculator, multi-metric choice and ``behavior``.

A ``type = "target"`` rule with ``mode = "hpa"`` runs this module instead of our own target
tracking. It follows ``pkg/controller/podautoscaler`` (``replica_calculator.go``,
``horizontal.go``) step by step, integer arithmetic included::

    reconcile     current 0 and min > 0: autoscaling disabled (no change)
                  current > max: max;  current < min: min      (no normalization)
    metrics       per rule: a recommendation, or an error; the largest recommendation wins;
                  all in error, or some in error and the rest would scale down: no change
    stabilize     up:   max(current, lowest recommendation of the up window)
                  down: min(that, highest recommendation of the down window)
                  (a window holds recommendations strictly newer than now - window)
    rate          per direction, each policy from the period's starting count
                  (current - ups + downs in the period); Max/Min/Disabled; then min/max

Instances map to pods as: ``draining`` = being deleted (ignored); ``starting`` = running,
not ready (its Ready condition went false when it started); ``ready`` = running and ready
since ``ready_at`` (unknown: long ago). What the HPA needs beyond our model (per-pod requests,
the Pending phase, the Ready condition's time) is a field of ``Pod`` the tests set directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

from senex_scale.core.state import ScaleEvent
from senex_scale.policy.models import RateLimit, ScalingRules

Phase = Literal["pending", "running", "ignored"]
"""``ignored``: failed, or being deleted (a draining instance)."""

PodTarget = Literal["utilization", "average_value"]

DEFAULT_UP: tuple[RateLimit, ...] = (
    RateLimit(percent=100, period=15),
    RateLimit(instances=4, period=15),
)
DEFAULT_DOWN: tuple[RateLimit, ...] = (RateLimit(percent=100, period=15),)
DEFAULT_DOWN_WINDOW = 300.0


class Pod(NamedTuple):
    """One pod as the replica calculator sees it."""

    id: str
    value: float | None
    """Its metric (a percent of its request for utilization), None when it has none."""
    phase: Phase = "running"
    ready: bool | None = True
    """The Ready condition; None when the pod has none."""
    started_at: float | None = None
    ready_since: float | None = None
    """When the Ready condition last changed (None: long ago)."""
    sampled_at: float = 0.0
    window: float = 0.0
    request: float = 1.0
    """Its request (any unit; only ratios matter), for utilization."""


class Tolerances(NamedTuple):
    """No change while ``1 - down <= ratio <= 1 + up``."""

    down: float = 0.1
    up: float = 0.1

    def within(self, ratio: float) -> bool:
        """True when ``ratio`` is inside the tolerance band (edges included)."""
        return (1.0 - self.down) <= ratio <= (1.0 + self.up)


class Recommendation(NamedTuple):
    """A metric's proposal: a count, or None with the reason (the HPA's error)."""

    replicas: int | None
    usage: float | None
    reason: str


def _milli(value: float) -> int:
    return round(value * 1000)


def group_pods(
    pods: Sequence[Pod], cpu: bool, now: float, cpu_init: float, readiness_delay: float
) -> tuple[list[Pod], list[Pod], list[Pod]]:
    """(ready with a metric, unready, missing) as ``groupPods``; ignored pods are left out."""
    ready: list[Pod] = []
    unready: list[Pod] = []
    missing: list[Pod] = []
    for pod in pods:
        if pod.phase == "ignored":
            continue
        if pod.phase == "pending":
            unready.append(pod)
            continue
        if pod.value is None:
            missing.append(pod)
            continue
        if cpu:
            if pod.ready is None or pod.started_at is None:
                is_unready = True
            else:
                since = pod.ready_since if pod.ready_since is not None else -math.inf
                if pod.started_at + cpu_init > now:
                    is_unready = not pod.ready or pod.sampled_at < since + pod.window
                else:
                    is_unready = not pod.ready and pod.started_at + readiness_delay > since
            if is_unready:
                unready.append(pod)
                continue
        ready.append(pod)
    return ready, unready, missing


def _usage(kind: PodTarget, values: Sequence[tuple[float, float]], target: float) -> float:
    """Usage ratio of (value, request) pairs: integer percent or integer milli-units, as the HPA."""
    if kind == "utilization":
        total = sum(v * r for v, r in values)
        requests = sum(r for _, r in values)
        utilization = math.floor(total / requests + 1e-9)
        return utilization / target
    milli = [_milli(v) for v, _ in values]
    return (sum(milli) // len(milli)) / _milli(target)


def pod_replicas(
    current: int,
    pods: Sequence[Pod],
    target: float,
    kind: PodTarget,
    tolerances: Tolerances,
    now: float,
    *,
    cpu: bool = False,
    cpu_init: float = 300.0,
    readiness_delay: float = 30.0,
) -> Recommendation:
    """``GetResourceReplicas`` (utilization) or ``calcPlainMetricReplicas`` (average_value)."""
    if not pods:
        return Recommendation(None, None, "no instances")
    ready, unready, missing = group_pods(pods, cpu, now, cpu_init, readiness_delay)
    if not ready:
        return Recommendation(None, None, "no sample from a ready instance")
    values = [(p.value, p.request) for p in ready if p.value is not None]
    ratio = _usage(kind, values, target)
    usage = ratio * target
    up_unready = bool(unready) and ratio > 1.0
    if not up_unready and not missing:
        if tolerances.within(ratio):
            return Recommendation(current, usage, f"ratio {ratio:.3f} within tolerance")
        return Recommendation(
            math.ceil(ratio * len(ready)), usage, f"ratio {ratio:.3f} x {len(ready)} ready"
        )
    if missing:
        if kind == "utilization":
            if ratio < 1.0:
                fill = float(max(100.0, target))
                values += [(fill, p.request) for p in missing]
            elif ratio > 1.0:
                values += [(0.0, p.request) for p in missing]
        elif ratio < 1.0:
            values += [(target, p.request) for p in missing]
        else:
            values += [(0.0, p.request) for p in missing]
    if up_unready:
        values += [(0.0, p.request) for p in unready]
    new_ratio = _usage(kind, values, target)
    counted = f"{len(missing)} without a sample, {len(unready) if up_unready else 0} unready at 0"
    if tolerances.within(new_ratio) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return Recommendation(
            current, usage, f"ratio {ratio:.3f}, {new_ratio:.3f} counting {counted}: no change"
        )
    replicas = math.ceil(new_ratio * len(values))
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return Recommendation(
            current, usage, f"ratio {new_ratio:.3f} would move against its direction: no change"
        )
    return Recommendation(
        replicas, usage, f"ratio {new_ratio:.3f} x {len(values)} counting {counted}"
    )


def value_replicas(
    current: int, ready: int, usage: float, target: float, tolerances: Tolerances
) -> Recommendation:
    """A ``Value`` target (Object/External): ceil(ready instances x usage / target)."""
    ratio = _milli(usage) / _milli(target)
    if current == 0:
        return Recommendation(math.ceil(ratio), usage, f"ratio {ratio:.3f} from 0")
    if tolerances.within(ratio):
        return Recommendation(current, usage, f"ratio {ratio:.3f} within tolerance")
    return Recommendation(math.ceil(ratio * ready), usage, f"ratio {ratio:.3f} x {ready} ready")


def total_replicas(
    status: int, usage: float, target: float, tolerances: Tolerances
) -> Recommendation:
    """An ``AverageValue`` target on one value (Object/External per pod): ceil(usage / target).

    ``status`` is the live instance count (the scale's ``status.replicas``), which is also
    the answer inside the tolerance.
    """
    used, per = _milli(usage), _milli(target)
    ratio = used / (per * status) if status > 0 else math.inf
    if tolerances.within(ratio):
        return Recommendation(status, usage, f"ratio {ratio:.3f} within tolerance")
    return Recommendation(math.ceil(used / per), usage, f"total {usage:g} / {target:g}")


def combine(spec: int, proposals: Sequence[Recommendation]) -> tuple[int | None, str | None]:
    """``computeReplicasForMetrics``: the largest proposal, or (None, why) when the HPA errs."""
    invalid = [p for p in proposals if p.replicas is None]
    valid = [p.replicas for p in proposals if p.replicas is not None]
    replicas = max(valid, default=0)
    if len(invalid) >= len(proposals):
        return None, "every metric failed"
    if invalid and replicas < spec:
        return None, f"{len(invalid)} metric(s) failed and the others would scale in"
    return replicas, None


def stabilize(
    recommendations: Sequence[tuple[float, int]],
    now: float,
    current: int,
    desired: int,
    up_window: float,
    down_window: float,
) -> int:
    """``stabilizeRecommendationWithBehaviors`` over time-ordered ``recommendations`` (the
    caller records ``desired`` afterwards)."""
    up = down = desired
    up_cut, down_cut = now - up_window, now - down_window
    for at, value in reversed(recommendations):  # time-ordered: stop at the first too old
        if at <= up_cut and at <= down_cut:
            break
        if at > up_cut and value < up:
            up = value
        if at > down_cut and value > down:
            down = value
    return min(max(current, up), down)


def _changes(events: Sequence[ScaleEvent], now: float, period: float) -> tuple[int, int]:
    """Instances added and removed by events strictly newer than ``now - period``."""
    added = removed = 0
    for event in events:
        if event.at > now - period:
            if event.after > event.before:
                added += event.after - event.before
            else:
                removed += event.before - event.after
    return added, removed


def scale_up_limit(
    current: int, events: Sequence[ScaleEvent], now: float, rules: ScalingRules
) -> int:
    """``calculateScaleUpLimitWithScalingRules``."""
    if rules.select == "disabled":
        return current
    result: int | None = None
    for policy in rules.policies if rules.policies is not None else DEFAULT_UP:
        added, removed = _changes(events, now, policy.period)
        start = current - added + removed
        if policy.instances is not None:
            proposed = start + policy.instances
        else:
            assert policy.percent is not None
            proposed = math.ceil(start * (1 + policy.percent / 100))
        if result is None:
            result = proposed
        elif rules.select == "min":
            result = min(result, proposed)
        else:
            result = max(result, proposed)
    return current if result is None else result


def scale_down_limit(
    current: int, events: Sequence[ScaleEvent], now: float, rules: ScalingRules
) -> int:
    """``calculateScaleDownLimitWithBehaviors`` (a percent truncates toward zero)."""
    if rules.select == "disabled":
        return current
    result: int | None = None
    for policy in rules.policies if rules.policies is not None else DEFAULT_DOWN:
        added, removed = _changes(events, now, policy.period)
        start = current - added + removed
        if policy.instances is not None:
            proposed = start - policy.instances
        else:
            assert policy.percent is not None
            proposed = int(start * (1 - policy.percent / 100))
        if result is None:
            result = proposed
        elif rules.select == "min":
            result = max(result, proposed)
        else:
            result = min(result, proposed)
    return current if result is None else result


def limit_rate(
    current: int,
    desired: int,
    low: int,
    high: int,
    events: Sequence[ScaleEvent],
    now: float,
    up: ScalingRules,
    down: ScalingRules,
) -> tuple[int, str | None]:
    """``convertDesiredReplicasWithBehaviorRate``: rate limits, then min/max; and why."""
    if desired > current:
        limit = max(scale_up_limit(current, events, now, up), current)
        allowed, why = (limit, "scale-up limit") if high > limit else (high, "max")
        if desired > allowed:
            return allowed, why
    elif desired < current:
        limit = min(scale_down_limit(current, events, now, down), current)
        allowed, why = (limit, "scale-down limit") if low < limit else (low, "min")
        if desired < allowed:
            return allowed, why
    return desired, None


def windows(up: ScalingRules, down: ScalingRules) -> tuple[float, float]:
    """(up, down) stabilization windows with the HPA's defaults."""
    return (
        up.stabilization if up.stabilization is not None else 0.0,
        down.stabilization if down.stabilization is not None else DEFAULT_DOWN_WINDOW,
    )


def longest_period(up: ScalingRules, down: ScalingRules) -> float:
    """The longest rate-policy period or stabilization window: how long memory must last."""
    periods = [
        p.period
        for rules, default in ((up, DEFAULT_UP), (down, DEFAULT_DOWN))
        for p in (rules.policies if rules.policies is not None else default)
    ]
    return max([*periods, *windows(up, down)])
