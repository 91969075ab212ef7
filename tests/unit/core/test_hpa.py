"""``mode = "hpa"``: the Kubernetes HPA exactly, table-driven on the HPA's own test cases.

The replica calculator cases are those of ``replica_calculator_test.go`` and the behaviour
cases those of ``horizontal_test.go`` (``pkg/controller/podautoscaler``), restated in our
units: a CPU level of 300m on a 1-CPU request is 30 (% of request); a custom metric of
20000m is 20.0. The expected counts are the HPA's; the arithmetic is in each comment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pytest

from senex_scale.core import Decider, Instance, InstanceState, Memory, Observation, Sample
from senex_scale.core.hpa import (
    Pod,
    Tolerances,
    group_pods,
    limit_rate,
    pod_replicas,
    stabilize,
    total_replicas,
    value_replicas,
)
from senex_scale.core.state import ScaleEvent
from senex_scale.errors import PolicyError
from senex_scale.policy import Policy, parse_policy
from senex_scale.policy.models import RateLimit, ScalingRules

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp()
TOL = Tolerances()
COOL = NOW - 3 * 3600.0  # started long before the 5 m CPU initialization period
HOT = NOW - 60.0  # started a minute ago: inside it


def cool(value: float | None, *, ready: bool = True, request: float = 1.0) -> Pod:
    """A pod started hours ago; an unready one never became ready (condition set at start)."""
    since = COOL + 3000.0 if ready else COOL
    return Pod("p", value, "running", ready, COOL, since, NOW, 60.0, request)


def hot(value: float | None, *, ready: bool = True) -> Pod:
    """A pod started a minute ago, ready since then, its sample inside one metric window."""
    return Pod("p", value, "running", ready, HOT, HOT, NOW - 10.0, 60.0)


def pending() -> Pod:
    """A pod not scheduled yet."""
    return Pod("p", None, "pending", False, None, None)


def gone(value: float | None = None) -> Pod:
    """A failed pod or one being deleted."""
    return Pod("p", value, "ignored", False, COOL, COOL, NOW, 60.0)


# (current, pods, target, kind, cpu, expected) -- replica_calculator_test.go
CALC_CASES = [
    # TestReplicaCalcScaleUp: util (30+50+70)/3 = 50, 50/30 = 1.667 -> ceil(1.667*3) = 5
    pytest.param(3, [cool(30), cool(50), cool(70)], 30, "utilization", True, 5, id="ScaleUp"),
    # ScaleUpUnreadyLessScale: ready 50, 70 -> 60/30 = 2 > 1 with one unready at 0:
    # (0+50+70)/3 = 40 -> 1.333 -> ceil(4.0) = 4
    pytest.param(
        3,
        [cool(30, ready=False), cool(50), cool(70)],
        30,
        "utilization",
        True,
        4,
        id="ScaleUpUnreadyLessScale",
    ),
    # ScaleUpHotCpuLessScale: a hot pod's sample predates ready + window -> unready -> 4
    pytest.param(
        3, [hot(30), cool(50), cool(70)], 30, "utilization", True, 4, id="ScaleUpHotCpuLessScale"
    ),
    # ScaleUpUnreadyNoScale: ready 40 -> 1.333; (40+0+0)/3 = 13 -> 0.433 flips direction -> 3
    pytest.param(
        3,
        [cool(40), cool(50, ready=False), cool(70, ready=False)],
        30,
        "utilization",
        True,
        3,
        id="ScaleUpUnreadyNoScale",
    ),
    pytest.param(
        3,
        [cool(40), hot(50, ready=False), hot(70, ready=False)],
        30,
        "utilization",
        True,
        3,
        id="ScaleHotCpuNoScale",
    ),
    # ScaleUpIgnoresFailedPods / DeletionPods: 60/30 = 2 on 2 pods -> 4
    pytest.param(
        2,
        [cool(50), cool(70), gone(), gone()],
        30,
        "utilization",
        True,
        4,
        id="ScaleUpIgnoresFailedPods",
    ),
    pytest.param(
        2,
        [cool(50), cool(70), gone(90), gone(90)],
        30,
        "utilization",
        True,
        4,
        id="ScaleUpIgnoresDeletionPods",
    ),
    # ScaleUpCM: (20+10+30)/3 = 20 per pod, 20/15 = 1.333 -> 4
    pytest.param(3, [cool(20), cool(10), cool(30)], 15, "average_value", False, 4, id="ScaleUpCM"),
    # ScaleUpCMUnreadyHotCpuNoLessScale: not CPU, so readiness does not matter: 30/15 -> 6
    pytest.param(
        3,
        [cool(50), cool(10), hot(30, ready=False)],
        15,
        "average_value",
        False,
        6,
        id="ScaleUpCMUnreadyHotCpuNoLessScale",
    ),
    # ScaleUpCMUnreadyHotCpuScaleWouldScaleDown: 95000m / 3 = 31666m -> 2.111 -> ceil(6.33) = 7
    pytest.param(
        3,
        [hot(50, ready=False), cool(15), hot(30, ready=False)],
        15,
        "average_value",
        False,
        7,
        id="ScaleUpCMUnreadyHotCpuScaleWouldScaleDown",
    ),
    # ScaleDown: (10+30+50+25+25)/5 = 28, 28/50 = 0.56 -> ceil(2.8) = 3
    pytest.param(
        5,
        [cool(10), cool(30), cool(50), cool(25), cool(25)],
        50,
        "utilization",
        True,
        3,
        id="ScaleDown",
    ),
    # ScaleDownCM: 12/20 = 0.6 -> 3
    pytest.param(5, [cool(12)] * 5, 20, "average_value", False, 3, id="ScaleDownCM"),
    # ScaleDownIncludeUnreadyPods: ready 10, 30, 50 -> 30/50 = 0.6 (scale-down: unready
    # pods are left out) -> ceil(0.6*3) = 2
    pytest.param(
        5,
        [cool(10), cool(30), cool(50), cool(25, ready=False), cool(25, ready=False)],
        50,
        "utilization",
        True,
        2,
        id="ScaleDownIncludeUnreadyPods",
    ),
    # ScaleDownExcludeUnscheduledPods: one running pod at 10, four pending -> ceil(0.2) = 1
    pytest.param(
        5,
        [cool(10), pending(), pending(), pending(), pending()],
        50,
        "utilization",
        True,
        1,
        id="ScaleDownExcludeUnscheduledPods",
    ),
    # ScaleDownIgnoreHotCpuPods: the two hot pods' samples do not count -> 2
    pytest.param(
        5,
        [cool(10), cool(30), cool(50), hot(25), hot(25)],
        50,
        "utilization",
        True,
        2,
        id="ScaleDownIgnoreHotCpuPods",
    ),
    pytest.param(
        5,
        [cool(10), cool(30), cool(50), cool(25), cool(25), gone(), gone()],
        50,
        "utilization",
        True,
        3,
        id="ScaleDownIgnoresFailedPods",
    ),
    pytest.param(
        5,
        [cool(10), cool(30), cool(50), cool(25), cool(25), gone(25), gone(25)],
        50,
        "utilization",
        True,
        3,
        id="ScaleDownIgnoresDeletionPods",
    ),
    # Tolerance: requests 0.9/1.0/1.1 CPU at 1010m/1030m/1020m -> 3060*100/3000 = 102 -> 3
    pytest.param(
        3,
        [
            cool(101.0 / 0.9, request=0.9),
            cool(103.0, request=1.0),
            cool(102.0 / 1.1, request=1.1),
        ],
        100,
        "utilization",
        True,
        3,
        id="Tolerance",
    ),
    # ToleranceCM: 61000m / 3 = 20333m, 20333/20000 = 1.017 -> 3
    pytest.param(
        3, [cool(20), cool(21), cool(21)], 20, "average_value", False, 3, id="ToleranceCM"
    ),
    # SuperfluousMetrics (only the pods' own metrics count): 2350/4 = 587 -> 5.87 -> 24
    pytest.param(
        4,
        [cool(400), cool(950), cool(300), cool(700)],
        100,
        "utilization",
        True,
        24,
        id="SuperfluousMetrics",
    ),
    # MissingMetrics: 49.5/2 = 24 -> 0.24, missing at 100 %: (40+9.5+200)/4 = 62 -> ceil(2.48) = 3
    pytest.param(
        4,
        [cool(40), cool(9.5), cool(None), cool(None)],
        100,
        "utilization",
        True,
        3,
        id="MissingMetrics",
    ),
    # MissingMetricsNoChangeEq: ratio exactly 1: nothing filled, 1.0 is within -> 2
    pytest.param(
        2, [cool(100), cool(None)], 100, "utilization", True, 2, id="MissingMetricsNoChangeEq"
    ),
    # NoChangeGt: 1.9, missing at 0 -> 0.95 within -> 2
    pytest.param(
        2, [cool(190), cool(None)], 100, "utilization", True, 2, id="MissingMetricsNoChangeGt"
    ),
    # NoChangeLt: 0.6, missing at 100 -> 0.8 -> ceil(1.6) = 2
    pytest.param(
        2, [cool(60), cool(None)], 100, "utilization", True, 2, id="MissingMetricsNoChangeLt"
    ),
    # MissingMetricsUnreadyChange: ready 45 -> 0.9, missing at 100 -> 72 -> 1.45 flips -> 3
    pytest.param(
        3,
        [cool(10, ready=False), cool(45), cool(None)],
        50,
        "utilization",
        True,
        3,
        id="MissingMetricsUnreadyChange",
    ),
    pytest.param(
        3,
        [hot(10), cool(45), cool(None)],
        50,
        "utilization",
        True,
        3,
        id="MissingMetricsHotCpuNoChange",
    ),
    # MissingMetricsUnreadyScaleUp: 200/50 = 4, unready and missing at 0: 200/3 = 66
    # -> 1.32 -> ceil(3.96) = 4
    pytest.param(
        3,
        [cool(10, ready=False), cool(200), cool(None)],
        50,
        "utilization",
        True,
        4,
        id="MissingMetricsUnreadyScaleUp",
    ),
    pytest.param(
        3,
        [hot(10, ready=False), cool(200), cool(None)],
        50,
        "utilization",
        True,
        4,
        id="MissingMetricsHotCpuScaleUp",
    ),
    # MissingMetricsUnreadyScaleDown: ready 10, 10 -> 0.2; missing at 100: 120/3 = 40 -> 0.8
    # -> ceil(2.4) = 3
    pytest.param(
        4,
        [cool(10, ready=False), cool(10), cool(10), cool(None)],
        50,
        "utilization",
        True,
        3,
        id="MissingMetricsUnreadyScaleDown",
    ),
    # DuringRollingUpdateWithMaxSurge: 2 desired, 3 pods, one without metrics:
    # 0.2 -> 120/3 = 40 -> 0.8 -> ceil(2.4) = 3 > 2 against the direction -> 2
    pytest.param(
        2,
        [cool(10), cool(10), cool(None)],
        50,
        "utilization",
        True,
        2,
        id="DuringRollingUpdateWithMaxSurge",
    ),
    # ComputedToleranceAlgImplementation: 150m used of ~300m requested on 10 pods = 50 %;
    # target int((1/(2*0.9) + 0.01) * 100) = 56 -> 0.893, just outside -> ceil(8.93) = 9
    pytest.param(
        10,
        [
            cool(150 / (300 + d) * 100, request=(300 + d) / 1000)
            for d in (100, -100, 10, -10, 2, -2, 1, -1, 0, 0)
        ],
        56,
        "utilization",
        True,
        9,
        id="ComputedToleranceAlgImplementation",
    ),
    # ... and target 55 (0.004 instead of 0.01): 50/55 = 0.909, inside -> 10
    pytest.param(
        10,
        [
            cool(150 / (300 + d) * 100, request=(300 + d) / 1000)
            for d in (100, -100, 10, -10, 2, -2, 1, -1, 0, 0)
        ],
        55,
        "utilization",
        True,
        10,
        id="ComputedToleranceAlgImplementation-unscaled",
    ),
    # a missing pod on a scale-down of a target above 100 %: filled at the target, not 100
    # 50/200 = 0.25; (50 + 200)/2 = 125 -> 0.625 -> ceil(1.25) = 2
    pytest.param(
        2, [cool(50), cool(None)], 200, "utilization", True, 2, id="MissingFillMaxOfTarget"
    ),
    # average_value on exactly 1.0 with a missing pod: filled at 0 -> 0.5 -> ceil(1.0) = 1
    pytest.param(
        2, [cool(20), cool(None)], 20, "average_value", False, 1, id="PlainMissingAtRatioOne"
    ),
]


@pytest.mark.parametrize(("current", "pods", "target", "kind", "cpu", "expected"), CALC_CASES)
def test_replica_calculator(
    current: int, pods: list[Pod], target: float, kind: str, cpu: bool, expected: int
) -> None:
    """The replica calculator gives the HPA's own expected count."""
    named = [p._replace(id=str(i)) for i, p in enumerate(pods)]
    rec = pod_replicas(current, named, target, kind, TOL, NOW, cpu=cpu)  # type: ignore[arg-type]
    assert rec.replicas == expected, rec.reason


def test_replica_calculator_without_samples_is_an_error() -> None:
    """EmptyMetrics: no ready pod with a sample is an error, not a count."""
    rec = pod_replicas(4, [cool(None)._replace(id="1")], 100, "utilization", TOL, NOW, cpu=True)
    assert rec.replicas is None
    assert pod_replicas(4, [], 100, "utilization", TOL, NOW).replicas is None


# (current or status, ready, usage, target, per-pod target?, expected)
OBJECT_CASES = [
    # ScaleUpCMObject (Value): 20/15 = 1.333 x 3 ready -> 4
    pytest.param(3, 3, 20.0, 15.0, False, 4, id="ScaleUpCMObject"),
    # ScaleUpCMObjectIgnoresUnreadyPods: 50/10 = 5 x 1 ready -> 5 (15 counting all)
    pytest.param(3, 1, 50.0, 10.0, False, 5, id="ScaleUpCMObjectIgnoresUnreadyPods"),
    # ScaleUpCMExternal: 8.6/4.4 = 1.95 x 1 -> 2
    pytest.param(1, 1, 8.6, 4.4, False, 2, id="ScaleUpCMExternal"),
    # ScaleUpCMExternalIgnoresUnreadyPods: 3 current, 1 ready -> ceil(1.95) = 2
    pytest.param(3, 1, 8.6, 4.4, False, 2, id="ScaleUpCMExternalIgnoresUnreadyPods"),
    # ScaleDownCMObject: 12/20 x 5 = 3
    pytest.param(5, 5, 12.0, 20.0, False, 3, id="ScaleDownCMObject"),
    # ScaleDownCMExternal: 8.6/14.334 = 0.59997 x 5 = 2.9999 -> 3
    pytest.param(5, 5, 8.6, 14.334, False, 3, id="ScaleDownCMExternal"),
    pytest.param(3, 3, 20.666, 20.0, False, 3, id="ToleranceCMObject"),
    pytest.param(3, 3, 8.6, 8.888, False, 3, id="ToleranceCMExternal"),
    # a Value target from zero instances: ceil(ratio)
    pytest.param(0, 0, 8.6, 4.4, False, 2, id="ValueFromZero"),
    # ScaleUpCMPerPodObject (AverageValue): 20/(5*3) = 1.333 -> ceil(20/5) = 4
    pytest.param(3, 3, 20.0, 5.0, True, 4, id="ScaleUpCMPerPodObject"),
    # ScaleUpPerPodCMExternal: 8.6/2.15 = 4
    pytest.param(3, 3, 8.6, 2.15, True, 4, id="ScaleUpPerPodCMExternal"),
    pytest.param(5, 5, 6.0, 2.0, True, 3, id="ScaleDownPerPodCMObject"),
    # ScaleDownPerPodCMExternal: 8.6/2.867 = 2.9996 -> 3
    pytest.param(5, 5, 8.6, 2.867, True, 3, id="ScaleDownPerPodCMExternal"),
    # TolerancePerPodCMObject: 20.166/(5*4) = 1.008 -> the status count, 4
    pytest.param(4, 4, 20.166, 5.0, True, 4, id="TolerancePerPodCMObject"),
    pytest.param(3, 3, 8.6, 2.9, True, 3, id="TolerancePerPodCMExternal"),
]


@pytest.mark.parametrize(
    ("current", "ready", "usage", "target", "per_pod", "expected"), OBJECT_CASES
)
def test_object_and_external_targets(
    current: int, ready: int, usage: float, target: float, per_pod: bool, expected: int
) -> None:
    """Value and AverageValue targets on one value give the HPA's expected count."""
    if per_pod:
        rec = total_replicas(current, usage, target, TOL)
    else:
        rec = value_replicas(current, ready, usage, target, TOL)
    assert rec.replicas == expected, rec.reason


# --------------------------------------------------------------------------- groupPods

GROUP_CASES = [
    # (pod, cpu, ready count, unready count, missing count) -- TestGroupPods
    pytest.param(cool(1, ready=False), False, 1, 0, 0, id="count-in-unready-pod-memory"),
    pytest.param(Pod("p", 1.0, "running", None, NOW), True, 0, 1, 0, id="no-ready-condition-cpu"),
    pytest.param(
        Pod("p", 1.0, "running", True, NOW - 60, NOW - 30, NOW, 30.0),
        True,
        1,
        0,
        0,
        id="ready-with-fresh-metrics-in-initialization-cpu",
    ),
    pytest.param(
        Pod("p", 1.0, "running", True, NOW - 60, NOW - 30, NOW, 60.0),
        True,
        0,
        1,
        0,
        id="ready-without-fresh-metrics-in-initialization-cpu",
    ),
    pytest.param(
        Pod("p", 1.0, "running", False, NOW - 60, NOW - 30, NOW, 30.0),
        True,
        0,
        1,
        0,
        id="unready-in-initialization-cpu",
    ),
    pytest.param(
        Pod("p", 1.0, "running", True, NOW - 600, NOW - 30, NOW, 60.0),
        True,
        1,
        0,
        0,
        id="ready-after-initialization-cpu",
    ),
    pytest.param(
        Pod("p", 1.0, "running", False, NOW - 600, NOW - 600 + 20, NOW, 60.0),
        True,
        0,
        1,
        0,
        id="never-ready-after-initialization-cpu",
    ),
    pytest.param(
        Pod("p", 1.0, "running", False, NOW - 600, NOW - 60, NOW, 60.0),
        True,
        1,
        0,
        0,
        id="unready-after-being-ready-cpu",
    ),
    pytest.param(pending(), True, 0, 1, 0, id="pending-is-unready"),
    pytest.param(pending(), False, 0, 1, 0, id="pending-is-unready-memory"),
    pytest.param(cool(None, ready=False), True, 0, 0, 1, id="missing-before-readiness"),
    pytest.param(gone(5), True, 0, 0, 0, id="failed-or-deleted-ignored"),
]


@pytest.mark.parametrize(("pod", "cpu", "ready", "unready", "missing"), GROUP_CASES)
def test_group_pods(pod: Pod, cpu: bool, ready: int, unready: int, missing: int) -> None:
    """groupPods: readiness and start-up filtering apply to CPU only; pending is unready."""
    got = group_pods([pod], cpu, NOW, 300.0, 30.0)
    assert tuple(len(g) for g in got) == (ready, unready, missing)


# --------------------------------------------------------------------------- tolerances


@pytest.mark.parametrize(
    ("tolerances", "values", "expected"),
    [
        # 1.05 inside the default 0.1, outside an up tolerance of 0.02: ceil(1.05 * 4) = 5
        pytest.param(Tolerances(0.1, 0.1), [52.5] * 4, 4, id="default-within"),
        pytest.param(Tolerances(0.1, 0.02), [52.5] * 4, 5, id="up-0.02"),
        # 0.5: a scale-down tolerance of 1 (or more) never scales down
        pytest.param(Tolerances(1.0, 0.1), [25.0] * 4, 4, id="down-1.0-never"),
        pytest.param(Tolerances(0.1, 0.1), [25.0] * 4, 2, id="down-default"),
        # the edges are inside: 0.9 exactly with 0.1
        pytest.param(Tolerances(0.1, 0.1), [45.0] * 4, 4, id="edge-inclusive"),
    ],
)
def test_tolerance_per_direction(
    tolerances: Tolerances, values: list[float], expected: int
) -> None:
    """isWithin: 1 - down <= ratio <= 1 + up, each direction its own."""
    pods = [cool(v)._replace(id=str(i)) for i, v in enumerate(values)]
    rec = pod_replicas(4, pods, 50, "utilization", tolerances, NOW, cpu=True)
    assert rec.replicas == expected


# --------------------------------------------------------------------------- behavior


def rules(
    *policies: RateLimit, select: str = "max", stabilization: float | None = None
) -> ScalingRules:
    """One direction of a behavior."""
    return ScalingRules.model_validate(
        {"policies": policies or None, "select": select, "stabilization": stabilization}
    )


UP = rules()
DOWN = rules()
PODS4 = RateLimit(instances=4, period=60)
PODS2 = RateLimit(instances=2, period=60)
PODS1 = RateLimit(instances=1, period=60)
PCT10 = RateLimit(percent=10, period=60)
PCT50 = RateLimit(percent=50, period=60)
PCT100 = RateLimit(percent=100, period=60)


def ev(ago: float, before: int, after: int) -> ScaleEvent:
    """A scale event ``ago`` seconds before NOW."""
    return ScaleEvent(NOW - ago, before, after)


# (current, desired, min, max, events, up rules, down rules, expected) -- TestScalingWithRules
RATE_CASES = [
    # default scale-up: max(100 % -> 10, 4 pods -> 9) = 10
    pytest.param(5, 100, 1, 200, [], UP, DOWN, 10, id="up-default-percent-wins"),
    # at 1: max(2, 5) = 5
    pytest.param(1, 100, 1, 200, [], UP, DOWN, 5, id="up-default-pods-win"),
    pytest.param(10, 100, 1, 200, [], rules(PODS2), DOWN, 12, id="up-pods"),
    pytest.param(10, 100, 1, 200, [], rules(PCT10), DOWN, 11, id="up-percent"),
    # ceil(1 * 1.1) = 2: a percent rounds up so that it can always grow
    pytest.param(1, 100, 1, 200, [], rules(PCT10), DOWN, 2, id="up-percent-rounds-up"),
    pytest.param(10, 100, 1, 200, [], rules(PODS4, PCT100), DOWN, 20, id="up-select-max"),
    pytest.param(
        10, 100, 1, 200, [], rules(PODS4, PCT100, select="min"), DOWN, 14, id="up-select-min"
    ),
    pytest.param(10, 100, 1, 200, [], rules(PODS4, select="disabled"), DOWN, 10, id="up-disabled"),
    # +3 thirty seconds ago: the period started at 7 -> 7 + 4 = 11
    pytest.param(10, 20, 1, 200, [ev(30, 7, 10)], rules(PODS4), DOWN, 11, id="up-recent-ups"),
    # an event exactly one period old is outside it -> 10 + 4 = 14
    pytest.param(10, 20, 1, 200, [ev(60, 7, 10)], rules(PODS4), DOWN, 14, id="up-period-edge"),
    # -4 ten seconds ago: the period started at 14 -> 18 (opposite direction counts)
    pytest.param(10, 30, 1, 200, [ev(10, 14, 10)], rules(PODS4), DOWN, 18, id="up-recent-downs"),
    # already over the limit: no further scale-up, never a scale-down
    pytest.param(
        10, 30, 1, 200, [ev(5, 2, 10)], rules(PODS4), DOWN, 10, id="up-limit-below-current"
    ),
    pytest.param(10, 100, 1, 12, [], UP, DOWN, 12, id="up-capped-by-max"),
    # default scale-down: 100 % -> int(0) = 0, raised to min
    pytest.param(10, 1, 1, 200, [], UP, DOWN, 1, id="down-default"),
    # 50 % of 5 = 2.5 truncates to 2 (not 3)
    pytest.param(5, 1, 1, 200, [], UP, rules(PCT50), 2, id="down-percent-truncates"),
    pytest.param(5, 1, 1, 200, [], UP, rules(PODS1), 4, id="down-pods"),
    pytest.param(10, 1, 1, 200, [], UP, rules(PODS1, PCT50), 5, id="down-select-max"),
    pytest.param(10, 1, 1, 200, [], UP, rules(PODS1, PCT50, select="min"), 9, id="down-select-min"),
    pytest.param(10, 1, 1, 200, [], UP, rules(PODS1, select="disabled"), 10, id="down-disabled"),
    # +5 ten seconds ago: the period started at 5 -> 5 - 2 = 3
    pytest.param(10, 1, 1, 200, [ev(10, 5, 10)], UP, rules(PODS2), 3, id="down-recent-ups"),
    # -2 thirty seconds ago: started at 10 -> 8 = current: no scale-down yet
    pytest.param(8, 1, 1, 200, [ev(30, 10, 8)], UP, rules(PODS2), 8, id="down-recent-downs"),
    pytest.param(5, 1, 3, 200, [], UP, DOWN, 3, id="down-raised-by-min"),
    pytest.param(5, 5, 1, 200, [], UP, DOWN, 5, id="no-change"),
]


@pytest.mark.parametrize(
    ("current", "desired", "low", "high", "events", "up", "down", "expected"), RATE_CASES
)
def test_rate_policies(
    current: int,
    desired: int,
    low: int,
    high: int,
    events: list[ScaleEvent],
    up: ScalingRules,
    down: ScalingRules,
    expected: int,
) -> None:
    """convertDesiredReplicasWithBehaviorRate: policies from the period's start, then bounds."""
    got, _ = limit_rate(current, desired, low, high, events, NOW, up, down)
    assert got == expected


# (recommendations (ago, value), current, desired, up window, down window, expected)
STABILIZE_CASES = [
    pytest.param([], 5, 3, 0, 300, 3, id="down-empty"),
    pytest.param([(120, 5), (60, 4)], 5, 3, 0, 300, 5, id="down-held-by-highest"),
    pytest.param([(60, 4)], 5, 3, 0, 300, 4, id="down-to-highest"),
    # a recommendation exactly one window old is outside it
    pytest.param([(300, 5)], 5, 3, 0, 300, 3, id="down-boundary-excluded"),
    pytest.param([(299, 5)], 5, 3, 0, 300, 5, id="down-just-inside"),
    pytest.param([(60, 4)], 1, 7, 300, 300, 4, id="up-to-lowest"),
    pytest.param([(60, 3)], 5, 7, 300, 300, 5, id="up-held-at-current"),
    pytest.param([(300, 3)], 1, 7, 300, 300, 7, id="up-boundary-excluded"),
    pytest.param([(60, 3), (30, 8)], 5, 5, 300, 300, 5, id="both-windows"),
    pytest.param([(60, 1)], 5, 7, 0, 300, 7, id="up-window-zero"),
]


@pytest.mark.parametrize(("recs", "current", "desired", "up", "down", "expected"), STABILIZE_CASES)
def test_stabilization(
    recs: list[tuple[float, int]], current: int, desired: int, up: float, down: float, expected: int
) -> None:
    """stabilizeRecommendationWithBehaviors: per-direction windows without their boundary."""
    history = [(NOW - ago, value) for ago, value in recs]
    assert stabilize(history, NOW, current, desired, up, down) == expected


# --------------------------------------------------------------------------- through decide

SOURCE = '[sources.s]\ntype = "prometheus"\n'


def hpa_policy(
    *, min: int = 1, max: int = 10, signal: str = "cpu", type_: str = "utilization", extra: str = ""
) -> Policy:
    """One pool ``web`` with one ``mode = "hpa"`` rule ``h`` (target 50)."""
    return parse_policy(
        f"{SOURCE}\n[pools.web]\nmin = {min}\nmax = {max}\n"
        f'[[rules]]\nname = "h"\ntype = "target"\nmode = "hpa"\npool = "web"\n'
        f'metric = {{ source = "s", signal = "{signal}" }}\n'
        f'target = 50\ntarget_type = "{type_}"\n{extra}'
    )


def samples(values: Mapping[str, float], at: float = NOW) -> tuple[Sample, ...]:
    """Per-instance samples at ``at``."""
    return tuple(Sample(at, v, iid) for iid, v in values.items())


def decide_once(
    policy: Policy,
    instances: list[Instance],
    values: Mapping[str, float] | None = None,
    *,
    memory: Memory | None = None,
    desired: dict[str, int] | None = None,
    errors: dict[str, str] | None = None,
    now: float = NOW,
    extra: Mapping[str, Sequence[Sample]] | None = None,
) -> tuple[int, int, tuple[str, ...], Memory]:
    """(current, desired, reasons, memory) of pool web after one tick."""
    obs = Observation(
        {"web": instances},
        {"h": samples(values or {}, now), **(extra or {})},
        errors or {},
        memory or Memory(),
        desired or {},
    )
    plan = Decider(policy).decide(obs, now)
    decision = plan.for_pool("web")
    return decision.current, decision.desired, decision.reasons, plan.memory


def warm(n: int) -> list[Instance]:
    """``n`` ready instances started long ago."""
    return [Instance(str(i + 1), InstanceState.READY, COOL, COOL + 60) for i in range(n)]


def test_scale_in_is_not_blocked_by_a_starting_instance() -> None:
    """Class 1: a starting instance without a sample is missing (filled at 100 %), not a veto.

    4 ready at 10 % of a 50 % target: 0.2, and the starting one at 100: 140/5 = 28 ->
    0.56 -> ceil(2.8) = 3.
    """
    instances = [*warm(4), Instance("5", InstanceState.STARTING, NOW - 20)]
    current, desired, reasons, _ = decide_once(
        hpa_policy(), instances, {"1": 10, "2": 10, "3": 10, "4": 10}
    )
    assert (current, desired) == (5, 3), reasons


def test_no_anti_flap_veto_unless_asked() -> None:
    """Class 2: unready CPU samples are left out of a scale-down; our veto only on request.

    Ready 1, 2 at 20, starting 3, 4 at 100 (CPU: unready): 20/50 = 0.4 -> ceil(0.8) = 1;
    the veto would see 20 x 4 / 1 = 80 > 55 and hold.
    """
    instances = [*warm(2), *(Instance(str(i), InstanceState.STARTING, NOW - 20) for i in (3, 4))]
    values = {"1": 20, "2": 20, "3": 100, "4": 100}
    assert decide_once(hpa_policy(), instances, values)[:2] == (4, 1)
    vetoed = hpa_policy(extra="anti_flap = true\n")
    current, desired, reasons, _ = decide_once(vetoed, instances, values)
    assert (current, desired) == (4, 4)
    assert any("anti_flap" in r for r in reasons)


def test_readiness_applies_to_cpu_only() -> None:
    """Class 4: a starting instance's queue metric counts as ready; its CPU would not."""
    instances = [*warm(2), Instance("3", InstanceState.STARTING, NOW - 20)]
    values = {"1": 20, "2": 20, "3": 20}
    # not CPU: (20+20+20)/3 = 20 -> 0.4 -> ceil(1.2) = 2
    assert decide_once(hpa_policy(signal="busy", type_="average_value"), instances, values)[1] == 2
    # CPU: the starting one is unready and left out: 0.4 x 2 ready -> 1
    assert decide_once(hpa_policy(), instances, values)[1] == 1


def test_warm_up_is_an_option() -> None:
    """Our warm-up (not capacity for the pool's 60 s) is off in hpa mode unless asked for."""
    fresh = Instance("3", InstanceState.READY, NOW - 30, NOW - 5)
    instances = [*warm(2), fresh]
    values = {"1": 100, "2": 100, "3": 10}
    policy = hpa_policy(signal="busy", type_="average_value")
    # 210/3 = 70 -> 1.4 -> ceil(4.2) = 5
    assert decide_once(policy, instances, values)[1] == 5
    # warm-up on: the fresh one is not capacity (0 on a scale-up): 200/3 = 66.6 -> ceil(4) = 4
    on = hpa_policy(signal="busy", type_="average_value", extra="warmup = true\n")
    assert decide_once(on, instances, values)[1] == 4


def test_zero_instances_with_a_minimum_is_disabled() -> None:
    """Class 6: 0 instances and min > 0 means autoscaling is disabled: no change."""
    current, desired, reasons, _ = decide_once(hpa_policy(min=2), [], {})
    assert (current, desired) == (0, 0)
    assert any("disabled" in r for r in reasons)


def test_outside_bounds_goes_to_the_bound() -> None:
    """Above max: max; below min: min, without the metrics or the rate limits."""
    assert decide_once(hpa_policy(max=3), warm(5), {})[1] == 3
    assert decide_once(hpa_policy(min=4), warm(2), {})[1] == 4


def test_stabilization_across_ticks_and_its_boundary() -> None:
    """A high recommendation holds a scale-down for 300 s, not a moment longer."""
    policy = hpa_policy()
    high = dict.fromkeys("1234", 60.0)  # 1.2 -> ceil(4.8) = 5
    low = dict.fromkeys("1234", 20.0)  # 0.4 -> ceil(1.6) = 2
    *_, memory = decide_once(policy, warm(4), high)
    assert decide_once(policy, warm(4), low, memory=memory, now=NOW + 299)[1] == 4
    assert decide_once(policy, warm(4), low, memory=memory, now=NOW + 300)[1] == 2


def test_scale_up_stabilization_window() -> None:
    """behavior.scale_up.stabilization: a scale-up goes to the lowest recent recommendation."""
    policy = hpa_policy(extra='behavior = { scale_up = { stabilization = "60s" } }\n')
    *_, memory = decide_once(policy, warm(4), dict.fromkeys("1234", 50.0))  # recommends 4
    high = dict.fromkeys("1234", 100.0)  # 2.0 -> 8
    assert decide_once(policy, warm(4), high, memory=memory, now=NOW + 30)[1] == 4
    assert decide_once(policy, warm(4), high, memory=memory, now=NOW + 60)[1] == 8


def test_rate_limit_counts_scale_events_from_memory() -> None:
    """The pool's recorded scale events start each policy's period (current - ups + downs)."""
    policy = hpa_policy(
        max=50,
        extra=('behavior = { scale_up = { policies = [{ instances = 2, period = "60s" }] } }\n'),
    )
    memory = Memory().with_scale("web", NOW - 30, 2, 4, 600)
    values = dict.fromkeys("1234", 100.0)  # 2.0 -> 8
    assert decide_once(policy, warm(4), values, memory=memory)[1] == 4  # 2 + 2 in this period
    assert decide_once(policy, warm(4), values, memory=memory, now=NOW + 31)[1] == 6


def test_desired_count_differs_from_live_instances() -> None:
    """Surge: the HPA scales from the asked-for count, its AverageValue from the live count."""
    current, desired, _, _ = decide_once(
        hpa_policy(), warm(3), {"1": 10, "2": 10, "3": 10}, desired={"web": 2}
    )
    # 0.2 x 3 ready -> 1, scaling from the asked-for 2
    assert (current, desired) == (2, 1)


def test_value_target() -> None:
    """A Value target: ceil(ready instances x value / target), starting ones not counted."""
    policy = hpa_policy(signal="queue", type_="value")
    instances = [*warm(2), Instance("3", InstanceState.STARTING, NOW - 20)]
    obs_samples = {"h": (Sample(NOW, 150.0),)}
    _, desired, _, _ = decide_once(policy, instances, extra=obs_samples)
    assert desired == 6  # 150/50 = 3 x 2 ready


def test_several_metrics_take_the_largest_and_errors_block_scale_in() -> None:
    """Two hpa rules are one HPA: the largest count wins; a failed one blocks a scale-in."""
    policy = parse_policy(
        f"{SOURCE}\n[pools.web]\nmin = 1\nmax = 10\n"
        + "".join(
            f'[[rules]]\nname = "{n}"\ntype = "target"\nmode = "hpa"\npool = "web"\n'
            f'metric = {{ source = "s", signal = "busy" }}\ntarget = 50\n'
            f'target_type = "average_value"\n'
            for n in ("h", "g")
        )
    )
    low = samples(dict.fromkeys("1234", 10.0))
    high = samples(dict.fromkeys("1234", 100.0))
    assert decide_once(policy, warm(4), extra={"h": low, "g": high})[1] == 8
    assert decide_once(policy, warm(4), extra={"h": low, "g": low})[1] == 1
    blocked = decide_once(policy, warm(4), extra={"h": low}, errors={"g": "refused"})
    assert blocked[1] == 4
    assert any("failed" in r for r in blocked[2])
    assert decide_once(policy, warm(4), extra={"h": high}, errors={"g": "refused"})[1] == 8


def test_hpa_only_options_need_hpa_mode() -> None:
    """value/utilization targets and behavior are refused outside mode = "hpa"."""
    base = (
        f"{SOURCE}\n[pools.web]\nmin = 1\nmax = 3\n"
        '[[rules]]\nname = "t"\ntype = "target"\npool = "web"\n'
        'metric = { source = "s" }\ntarget = 5\n'
    )
    with pytest.raises(PolicyError, match="needs mode"):
        parse_policy(base + 'target_type = "value"\n')
    with pytest.raises(PolicyError, match="need mode"):
        parse_policy(base + 'behavior = { scale_down = { select = "min" } }\n')
    ok = parse_policy(base + 'mode = "hpa"\nbehavior = { scale_down = { tolerance = 1.5 } }\n')
    assert math.isclose(ok.rules[0].behavior.scale_down.tolerance or 0, 1.5)  # type: ignore[union-attr]


def test_beside_other_rules_the_hpa_is_one_vote() -> None:
    """With a threshold rule on the pool, the HPA's count is one vote; both report a status."""
    policy = hpa_policy(
        extra=(
            '[[rules]]\nname = "band"\npool = "web"\nmetric = { source = "s" }\n'
            'scale_out = { above = 95, for = "0s" }\nscale_in = { below = 5, for = "10m" }\n'
        )
    )
    obs = Observation(
        {"web": warm(4)},
        {"h": samples(dict.fromkeys("1234", 100.0)), "band": (Sample(NOW, 50.0),)},
    )
    plan = Decider(policy).decide(obs, NOW)
    assert plan.for_pool("web").desired == 8  # 100/50 = 2 -> 8; the band has no objection
    assert {s.rule for s in plan.rules} == {"h", "band"}
    # the HPA wants fewer, the band (in its band, not averaged) holds: our guards apply
    low = Observation(
        {"web": warm(4)},
        {"h": samples(dict.fromkeys("1234", 10.0)), "band": (Sample(NOW, 50.0),)},
    )
    assert Decider(policy).decide(low, NOW).for_pool("web").desired == 4


def test_a_starting_instance_is_never_ready_for_cpu() -> None:
    """A starting instance with a CPU sample is unready even when its start time is unknown."""
    for started in (NOW - 20, None):
        instances = [*warm(2), Instance("3", InstanceState.STARTING, started)]
        # ready 1, 2 at 20 -> 0.4 x 2 ready = 1; the starting one's 100 is left out
        assert decide_once(hpa_policy(), instances, {"1": 20, "2": 20, "3": 100})[1] == 1
