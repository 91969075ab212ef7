"""The steady bands' building blocks: bisection over float orderings, and when a pool is
steady at all (``Decider.steady``)."""

from __future__ import annotations

import math

import pytest

from senex_scale.core import Decider, Instance, InstanceState
from senex_scale.core.steady import LIMIT, first_true, last_true
from senex_scale.policy import load_default
from senex_scale.simulate.baselines import hpa_policy
from senex_scale.simulate.runner import acting


@pytest.mark.parametrize("edge", [70.0, -3.25, 0.0, 1e-300, 99.99999999999999, 5e11])
def test_the_edges_are_exact_to_the_last_float(edge: float) -> None:
    high = last_true(lambda v: v <= edge)
    assert high == edge
    assert last_true(lambda v: v < edge) == math.nextafter(edge, -math.inf)
    assert first_true(lambda v: v >= edge) == edge
    assert first_true(lambda v: v > edge) == math.nextafter(edge, math.inf)


def test_a_predicate_that_never_or_always_holds() -> None:
    assert last_true(lambda v: False) is None
    assert first_true(lambda v: False) is None
    assert last_true(lambda v: True) == LIMIT
    assert first_true(lambda v: True) == -LIMIT


def _ready(n: int, started: float | None = None) -> list[Instance]:
    return [Instance(str(i + 1), InstanceState.READY, started, None) for i in range(n)]


NOW = 1_780_000_000.0  # a weekday night: no schedule window open


def test_a_pool_at_its_minimum_is_steady_below_its_lines() -> None:
    decider = Decider(acting(load_default()))
    steady = decider.steady({"celery": _ready(2)}, NOW)
    assert steady is not None
    assert steady.bands["celery-queue"] == (-math.inf, 100.0)  # scale_out above 100
    low, high = steady.bands["celery-busy"]  # target 70: 2 -> 2 while the raw count <= 2
    assert low == -LIMIT
    assert 70.0 < high < 100.0
    assert steady.bands["redis-memory"] == (-math.inf, 90.0)  # the action rules too
    assert steady.memory > 0


def test_above_its_minimum_a_target_must_want_the_count_it_has() -> None:
    decider = Decider(acting(load_default()))
    steady = decider.steady({"celery": _ready(4)}, NOW)
    assert steady is not None
    low, high = steady.bands["celery-busy"]
    assert 0.0 < low < 70.0 < high  # a tolerance band around the target


@pytest.mark.parametrize(
    "instances",
    [
        [Instance("1", InstanceState.READY), Instance("2", InstanceState.STARTING, NOW - 5)],
        [Instance("1", InstanceState.READY), Instance("2", InstanceState.DRAINING)],
        _ready(2, started=NOW - 10),  # not warm yet (warmup 30s)
        _ready(7),  # above max
        [],
    ],
    ids=["starting", "draining", "warming", "above-max", "empty"],
)
def test_a_pool_in_motion_is_not_steady(instances: list[Instance]) -> None:
    assert Decider(acting(load_default())).steady({"celery": instances}, NOW) is None


def test_the_hpa_is_not_steady_inside_its_cpu_initialization_period() -> None:
    decider = Decider(hpa_policy(load_default()))
    assert decider.steady({"celery": _ready(2, started=NOW - 200)}, NOW) is None
    assert decider.steady({"celery": _ready(2, started=NOW - 400)}, NOW) is not None
